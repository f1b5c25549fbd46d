-- Runs once when the MySQL container initialises its data directory.
-- A least-privilege user for cdc-cache: replication (stream the binlog, read the head),
-- and SELECT (column names and `verify`) on the cached schema only.
CREATE USER 'cdc'@'%' IDENTIFIED BY 'cdc-password';
GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'cdc'@'%';
CREATE DATABASE shop;
GRANT SELECT ON shop.* TO 'cdc'@'%';

CREATE TABLE shop.users (
  id INT PRIMARY KEY AUTO_INCREMENT,
  name VARCHAR(100) NOT NULL,
  email VARCHAR(200) NOT NULL
);
INSERT INTO shop.users (name, email) VALUES ('ada', 'ada@example.com'), ('alan', 'alan@example.com');
