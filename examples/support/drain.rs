//! The transfer floor of the catch-up: the same binlog range pulled through mysql_async,
//! as the daemon pulls it, with every event parsed by mysql_common (header, checksum) and
//! nothing decoded, mapped or written.
//!
//! Why this and not only `mariadb-binlog --raw`: `--raw` writes every event to a file
//! through the C client, and measured slower than this (0.6–0.9 s against 0.16–0.34 s
//! for 250 MB), so it overstated the floor a reader is bound by.

use std::time::Instant;

use futures_util::StreamExt;
use mysql_async::binlog::events::{Event, RotateEvent};
use mysql_async::binlog::EventType;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn, Opts};

use cdc_cache::source::assembler::rotated_file;

/// Seconds to connect and read from `from` (`file:pos`) until an event ends at `head`.
pub fn seconds(url: &str, from: &str, head: &str) -> f64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let started = Instant::now();
    runtime.block_on(read(url, from, head));
    started.elapsed().as_secs_f64()
}

async fn read(url: &str, from: &str, head: &str) {
    let (mut file, pos) = split(from);
    let (end_file, end) = split(head);
    let mut conn = Conn::new(Opts::from_url(url).expect("url"))
        .await
        .expect("connect");
    // As the daemon asks: checksums on, MariaDB's GTID events.
    conn.query_drop("SET @source_binlog_checksum = 'ALL', @mariadb_slave_capability = 4")
        .await
        .expect("SET");
    let start = file.clone();
    let request = BinlogStreamRequest::new(4242)
        .with_filename(start.as_bytes())
        .with_pos(pos);
    let mut stream = conn.get_binlog_stream(request).await.expect("binlog dump");
    while let Some(event) = stream.next().await {
        let event = event.expect("an event");
        // Only a rotation is parsed: it names the file the next positions are in.
        if event.header().event_type() == Ok(EventType::ROTATE_EVENT) {
            file = rotated_to(&event);
        } else if file == end_file && u64::from(event.header().log_pos()) >= end {
            return;
        }
    }
    panic!("the stream ended before {head}");
}

/// The file a ROTATE names, as the daemon reads it (checksums are on: asked for above).
fn rotated_to(event: &Event) -> String {
    let rotate: RotateEvent<'_> = event.read_event().expect("a ROTATE event");
    let name = rotated_file(event, &rotate, true);
    String::from_utf8(name).expect("a UTF-8 file name")
}

fn split(position: &str) -> (String, u64) {
    let (file, pos) = position.split_once(':').expect("file:pos");
    (file.to_string(), pos.parse().expect("a position"))
}
