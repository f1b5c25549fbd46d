//! Secrets kept out of the config file: passwords read from files (`password_file`, for
//! container secrets) and merged into the connection URLs in memory. URLs are only ever
//! shown through `redact_url`.

use std::path::Path;

use super::{Config, ConfigError};

/// Checks that the files the config names exist, before anything connects.
pub fn validate(config: &Config) -> Result<(), ConfigError> {
    let files = [
        ("source.password_file", &config.source.password_file),
        ("source.tls_ca_file", &config.source.tls_ca_file),
        ("source.tls_cert_file", &config.source.tls_cert_file),
        ("source.tls_key_file", &config.source.tls_key_file),
        ("redis.password_file", &config.redis.password_file),
        ("redis.tls_ca_file", &config.redis.tls_ca_file),
        ("redis.tls_cert_file", &config.redis.tls_cert_file),
        ("redis.tls_key_file", &config.redis.tls_key_file),
    ];
    for (key, file) in files {
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::invalid(
                    key,
                    format!("{} is not a readable file", path.display()),
                ));
            }
        }
    }
    for section in ["source", "redis"] {
        let (cert, key) = match section {
            "source" => (&config.source.tls_cert_file, &config.source.tls_key_file),
            _ => (&config.redis.tls_cert_file, &config.redis.tls_key_file),
        };
        match (cert.is_some(), key.is_some()) {
            (true, false) => return Err(pair_missing(section, "tls_key_file", "tls_cert_file")),
            (false, true) => return Err(pair_missing(section, "tls_cert_file", "tls_key_file")),
            _ => {}
        }
    }
    let redis_tls = [
        ("redis.tls_ca_file", config.redis.tls_ca_file.is_some()),
        ("redis.tls_cert_file", config.redis.tls_cert_file.is_some()),
    ];
    for (key, set) in redis_tls {
        if set && !config.redis.url.starts_with("rediss://") {
            return Err(ConfigError::invalid(
                key,
                "is set but redis.url does not use TLS; write it as rediss://",
            ));
        }
    }
    Ok(())
}

/// A client certificate without its key, or the other way round.
fn pair_missing(section: &str, missing: &str, given: &str) -> ConfigError {
    let key = format!("{section}.{missing}");
    ConfigError::invalid(
        key,
        format!("is missing: {section}.{given} is set, and a client certificate needs both"),
    )
}

/// Puts the passwords from `password_file`s into the URLs.
pub fn resolve(config: &mut Config) -> Result<(), ConfigError> {
    if let Some(path) = &config.source.password_file {
        config.source.url = with_password(&config.source.url, path, "source.password_file")?;
        for url in &mut config.source.failover_urls {
            *url = with_password(url, path, "source.password_file")?;
        }
    }
    if let Some(path) = &config.redis.password_file {
        config.redis.url = with_password(&config.redis.url, path, "redis.password_file")?;
    }
    if let Some(sentinel) = &mut config.redis.sentinel {
        if let Some(path) = &sentinel.password_file {
            for node in &mut sentinel.nodes {
                *node = with_password(node, path, "redis.sentinel.password_file")?;
            }
        }
    }
    Ok(())
}

fn with_password(url: &str, path: &Path, key: &str) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::invalid(key, format!("cannot read {}: {e}", path.display())))?;
    // Secret files usually end with a newline that is not part of the password.
    let password = text.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(ConfigError::invalid(
            key,
            format!("{} is empty", path.display()),
        ));
    }
    let mut parsed = url::Url::parse(url)
        .map_err(|e| ConfigError::invalid(key, format!("the URL does not parse: {e}")))?;
    parsed
        .set_password(Some(password))
        .map_err(|()| ConfigError::invalid(key, "the URL cannot carry a password"))?;
    Ok(parsed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_file_fills_the_url_without_its_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cr:t@\n").expect("write");
        let url = with_password("mysql://cdc@db:3306/", &path, "k").expect("fills");
        let parsed = url::Url::parse(&url).expect("valid");
        assert_eq!(parsed.username(), "cdc");
        assert_eq!(parsed.password(), Some("s3cr%3At%40"));
        std::fs::write(&path, "\n").expect("write");
        assert!(with_password("mysql://cdc@db/", &path, "k").is_err());
    }
}
