//! MariaDB's `UUID`, `INET4` and `INET6` columns. The binlog (and the table map) shows them
//! as `BINARY(16)` / `BINARY(4)`; `SELECT` shows their text form. The column's declared
//! type (`information_schema`) tells them apart, and these functions write the text form
//! exactly as the server does, so cached values and keys match what applications read.

/// The 16 bytes in the order the server stores them, as `8-4-4-4-12` lowercase hex. A
/// shorter value (trailing zero bytes dropped, as for `BINARY(n)`) is zero-padded.
pub fn uuid(bytes: &[u8]) -> Option<String> {
    let b = padded::<16>(bytes)?;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

/// Dotted decimal.
pub fn inet4(bytes: &[u8]) -> Option<String> {
    Some(std::net::Ipv4Addr::from(padded::<4>(bytes)?).to_string())
}

/// The server's form, BIND's `inet_ntop`: the longest run of two or more zero groups
/// (the first of equal ones) becomes `::`, and an IPv4-compatible (`::1.2.3.4`) or
/// IPv4-mapped (`::ffff:1.2.3.4`) address ends in dotted decimal. Rust's own formatting
/// differs for the first kind.
pub fn inet6(bytes: &[u8]) -> Option<String> {
    let b = padded::<16>(bytes)?;
    let words: Vec<u16> = b
        .chunks(2)
        .map(|w| u16::from_be_bytes([w[0], w[1]]))
        .collect();
    let (base, len) = longest_zero_run(&words);
    let mut out = String::with_capacity(40);
    for (i, word) in words.iter().enumerate() {
        if len > 0 && (base..base + len).contains(&i) {
            if i == base {
                out.push(':');
            }
            continue;
        }
        if i != 0 {
            out.push(':');
        }
        let embeds_v4 = base == 0 && (len == 6 || (len == 5 && words[5] == 0xffff));
        if i == 6 && embeds_v4 {
            out.push_str(&inet4(&b[12..])?);
            return Some(out);
        }
        out.push_str(&format!("{word:x}"));
    }
    if len > 0 && base + len == 8 {
        out.push(':');
    }
    Some(out)
}

/// The first longest run of zero words, as (start, length); length 0 when no run has at
/// least two words.
fn longest_zero_run(words: &[u16]) -> (usize, usize) {
    let (mut best, mut current) = ((0, 0), (0, 0));
    for (i, &w) in words.iter().enumerate() {
        if w != 0 {
            current = (i + 1, 0);
            continue;
        }
        current.1 += 1;
        if current.1 > best.1 {
            best = current;
        }
    }
    if best.1 < 2 {
        (0, 0)
    } else {
        best
    }
}

fn padded<const N: usize>(bytes: &[u8]) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    out.get_mut(..bytes.len())?.copy_from_slice(bytes);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// Pairs as MariaDB 10.11 showed them (`SELECT i6, HEX(i6)`).
    #[test]
    fn inet6_is_written_as_the_server_writes_it() {
        for (stored, shown) in [
            ("00000000000000000000000000000000", "::"),
            ("00000000000000000000000000000001", "::1"),
            ("00000000000000000000000001020304", "::1.2.3.4"),
            ("20010db8000000000001000000000001", "2001:db8::1:0:0:1"),
            ("fe800000000000000000000000000000", "fe80::"),
            ("00000000000000000000ffff00000000", "::ffff:0.0.0.0"),
            ("00010002000300040005000600070008", "1:2:3:4:5:6:7:8"),
            ("20010000000000010000000000000000", "2001:0:0:1::"),
            ("00010000000200000000000000000003", "1:0:2::3"),
        ] {
            assert_eq!(inet6(&hex(stored)).as_deref(), Some(shown), "{stored}");
        }
        assert_eq!(inet6(&hex("fe80")).as_deref(), Some("fe80::"), "padded");
        assert_eq!(inet6(&[0; 17]), None);
    }

    #[test]
    fn uuid_and_inet4_keep_the_stored_byte_order() {
        assert_eq!(
            uuid(&hex("550e8400e29b41d4a716446655440000")).as_deref(),
            Some("550e8400-e29b-41d4-a716-446655440000")
        );
        assert_eq!(
            uuid(&hex("ff")).as_deref(),
            Some("ff000000-0000-0000-0000-000000000000")
        );
        assert_eq!(inet4(&hex("c0a80001")).as_deref(), Some("192.168.0.1"));
        assert_eq!(inet4(&hex("01")).as_deref(), Some("1.0.0.0"));
        assert_eq!(inet4(&[1, 2, 3, 4, 5]), None);
    }
}
