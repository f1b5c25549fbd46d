//! Tests of the row image parser: each direct read against mysql_common's, and plans.

use mysql_common::constants::ColumnType as T;
use proptest::prelude::*;

use super::*;

#[test]
fn an_image_has_slots_up_to_the_last_column_read() {
    assert_eq!(image_width(4, None), 4, "all columns read");
    assert_eq!(image_width(4, Some(&[true, false, false, false])), 1);
    assert_eq!(image_width(4, Some(&[false, true, false, true])), 4);
    assert_eq!(image_width(4, Some(&[false; 4])), 0);
    // Flags for fewer columns than the event has: the rest count as read.
    assert_eq!(image_width(4, Some(&[true, false])), 4);
    // Flags for more columns (the table lost one): only the event's columns count.
    assert_eq!(image_width(2, Some(&[true, false, true])), 1);
}

/// An integer column's value as the plan reads it; `None` for other types.
fn read_int(col: &ColumnMeta, data: &[u8]) -> Option<(SqlValue, usize)> {
    read_int_bytes(data, int_width(col)?, col.unsigned)
}

fn int_column(column_type: T, unsigned: bool) -> ColumnMeta {
    ColumnMeta {
        name: "n".into(),
        column_type,
        precision: 0,
        unsigned,
        text: TextKind::Binary,
        enum_labels: None,
        set_labels: None,
        json_text: false,
        binary_len: None,
        type_meta: Vec::new(),
        compressed: false,
    }
}

proptest! {
    #[test]
    fn integers_read_directly_match_mysql_common_and_convert(
        bytes in proptest::array::uniform8(any::<u8>()),
        type_index in 0usize..5,
        unsigned: bool,
    ) {
        let types = [
            T::MYSQL_TYPE_TINY,
            T::MYSQL_TYPE_SHORT,
            T::MYSQL_TYPE_INT24,
            T::MYSQL_TYPE_LONG,
            T::MYSQL_TYPE_LONGLONG,
        ];
        let col = int_column(types[type_index], unsigned);
        let (fast, len) = read_int(&col, &bytes).expect("an integer type");
        let mut buf = ParseBuf(&bytes);
        let parsed: BinlogValue<'_> = buf
            .parse((col.column_type, &col.type_meta[..], col.unsigned, false))
            .expect("mysql_common parses it");
        prop_assert_eq!(len, bytes.len() - buf.0.len(), "same length consumed");
        prop_assert_eq!(fast, convert(parsed, &col).expect("converts"));
    }
}

#[test]
fn other_types_and_short_data_are_left_to_mysql_common() {
    assert!(read_int(&int_column(T::MYSQL_TYPE_VARCHAR, false), &[1, 2]).is_none());
    assert!(read_int(&int_column(T::MYSQL_TYPE_LONG, false), &[1, 2, 3]).is_none());
}

fn text_column(column_type: T, type_meta: Vec<u8>) -> ColumnMeta {
    ColumnMeta {
        text: TextKind::Utf8,
        type_meta,
        ..int_column(column_type, false)
    }
}

proptest! {
    #[test]
    fn utf8_text_read_directly_matches_mysql_common_and_convert(
        payload in prop_oneof![
            any::<String>().prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..40),
        ],
        shape in 0usize..5,
        latin1: bool,
    ) {
        // VARCHAR(100), VARCHAR(1000), CHAR(120), CHAR(300), TEXT.
        let (col, prefix) = match shape {
            0 => (text_column(T::MYSQL_TYPE_VARCHAR, vec![100, 0]), 1),
            1 => (text_column(T::MYSQL_TYPE_VARCHAR, vec![0xe8, 3]), 2),
            2 => (text_column(T::MYSQL_TYPE_STRING, vec![0xfe, 120]), 1),
            3 => (text_column(T::MYSQL_TYPE_STRING, vec![0xee, 300u16 as u8]), 2),
            _ => (text_column(T::MYSQL_TYPE_BLOB, vec![2]), 2),
        };
        let mut col = col;
        if latin1 {
            col.text = TextKind::Latin1;
        }
        let mut data = payload.len().to_le_bytes()[..prefix].to_vec();
        data.extend_from_slice(&payload);
        data.extend_from_slice(b"next");
        let Some((fast, len)) = read_utf8(&col, &data) else {
            prop_assert!(latin1 && !payload.is_ascii(), "only latin1 beyond ASCII is left");
            return Ok(());
        };
        let mut buf = ParseBuf(&data);
        let parsed: BinlogValue<'_> = buf
            .parse((col.column_type, &col.type_meta[..], col.unsigned, false))
            .expect("mysql_common parses it");
        prop_assert_eq!(buf.0, b"next", "mysql_common read up to the next value");
        prop_assert_eq!(len, data.len() - 4, "same length consumed");
        prop_assert_eq!(fast, convert(parsed, &col));
    }
}

proptest! {
    #[test]
    fn all_ascii_agrees_with_core(
        text in "[ -~]{0,70}",
        high in proptest::option::of((any::<proptest::sample::Index>(), 0x80u8..)),
    ) {
        let mut bytes = text.into_bytes();
        if let (Some((at, b)), false) = (high, bytes.is_empty()) {
            let at = at.index(bytes.len());
            bytes[at] = b;
        }
        prop_assert_eq!(all_ascii(&bytes), bytes.is_ascii());
    }
}

#[test]
fn a_plan_steps_over_unread_columns_and_reads_the_rest() {
    // id INT, k INT (unread), c VARCHAR(100) (unread), d DATETIME(0) (unread),
    // name VARCHAR(100), note VARCHAR(100) in UCS-2 (NULL).
    let mut ucs2 = text_column(T::MYSQL_TYPE_VARCHAR, vec![100, 0]);
    ucs2.text = TextKind::Unsupported(35);
    let columns = vec![
        int_column(T::MYSQL_TYPE_LONG, false),
        int_column(T::MYSQL_TYPE_LONG, false),
        text_column(T::MYSQL_TYPE_VARCHAR, vec![100, 0]),
        ColumnMeta {
            type_meta: vec![0],
            compressed: false,
            ..int_column(T::MYSQL_TYPE_DATETIME2, false)
        },
        text_column(T::MYSQL_TYPE_VARCHAR, vec![100, 0]),
        ucs2,
    ];
    let needed = [true, false, false, false, true, true];
    let image = Image::new(&columns, Some(&needed), &[0, 1, 2, 3, 4, 5]);
    let steps: Vec<Step> = image.plan.iter().map(|&(_, step)| step).collect();
    assert_eq!(
        steps,
        [
            Step::Int {
                width: 4,
                unsigned: false
            },
            Step::Skip(4),
            Step::SkipPrefixed(1),
            Step::Skip(5),
            Step::Text { prefix: 1 },
            Step::Other { wanted: true },
        ]
    );
    // Null bitmap: only `note` (bit 5) is NULL. The image is appended after what the
    // values already hold (here one value of an earlier image).
    let mut row = vec![0b0010_0000];
    row.extend((-7i32).to_le_bytes());
    row.extend(42i32.to_le_bytes());
    row.extend([3, b'x', b'y', b'z']);
    row.extend([0x99, 0xb2, 0x7a, 0x00, 0x00]);
    row.extend([2, b'h', b'i']);
    row.extend(b"next");
    let mut buf = ParseBuf(&row);
    let mut read = vec![Some(SqlValue::Int(1))];
    image.read(&mut buf, &mut read).expect("a whole row");
    assert_eq!(buf.0, b"next", "the row was read to its end");
    assert_eq!(
        read,
        vec![
            Some(SqlValue::Int(1)),
            Some(SqlValue::Int(-7)),
            None,
            None,
            None,
            Some(SqlValue::Text("hi".into())),
            Some(SqlValue::Null),
        ]
    );
    // The same row cut inside `c`: an error naming the column, not a wrong value.
    let mut short = ParseBuf(&row[..11]);
    let err = image
        .read(&mut short, &mut Vec::new())
        .expect_err("a truncated row");
    assert_eq!(
        err,
        DecodeError::Rows("the row image ends inside column n".into())
    );
}

#[test]
fn latin1_text_beyond_ascii_in_a_plan_goes_the_general_path() {
    let mut col = text_column(T::MYSQL_TYPE_VARCHAR, vec![100, 0]);
    col.text = TextKind::Latin1;
    let columns = [col];
    let image = Image::new(&columns, None, &[0]);
    assert_eq!(image.plan, [(0, Step::Text { prefix: 1 })]);
    // No NULLs; one value: 0xE9 ('é' in latin1), then the next row's bytes.
    let row = [0, 1, 0xe9, b'n'];
    let mut values = Vec::new();
    let mut buf = ParseBuf(&row);
    image.read(&mut buf, &mut values).expect("a whole row");
    assert_eq!(buf.0, b"n");
    let mut general = ParseBuf(&row[1..]);
    let parsed: BinlogValue<'_> = general
        .parse((
            columns[0].column_type,
            &columns[0].type_meta[..],
            false,
            false,
        ))
        .expect("mysql_common parses it");
    assert_eq!(values, [Some(convert(parsed, &columns[0]).unwrap())]);
    assert_eq!(values, [Some(SqlValue::Text("é".into()))]);
}

#[test]
fn other_charsets_enums_and_json_text_are_left_to_the_general_path() {
    let data = [3, b'a', b'b', b'c'];
    let mut ucs2 = text_column(T::MYSQL_TYPE_VARCHAR, vec![100, 0]);
    ucs2.text = TextKind::Unsupported(35);
    assert!(read_utf8(&ucs2, &data).is_none());
    let mut json = text_column(T::MYSQL_TYPE_BLOB, vec![1]);
    json.json_text = true;
    assert!(read_utf8(&json, &data).is_none());
    let enumeration = text_column(T::MYSQL_TYPE_STRING, vec![0xf7, 1]);
    assert!(read_utf8(&enumeration, &data).is_none());
    assert_eq!(fixed_len(&enumeration), Some(1));
}

#[test]
fn negative_times_with_hundredths_read_as_the_server_writes_them() {
    // `mi_int3store(0x800000 + int part)` then the hundredths as a signed byte, for
    // -00:00:00.50, -12:34:56.78 and 12:34:56.78.
    let hms: i64 = (12 << 12) | (34 << 6) | 56;
    let encode = |packed: i64| {
        let int = (0x80_0000 + (packed >> 24)) as u32;
        let frac = ((packed % (1 << 24)) / 10_000) as i8 as u8;
        [(int >> 16) as u8, (int >> 8) as u8, int as u8, frac, 0xAA]
    };
    let time = |negative, hours, minute, second, micros| SqlValue::Time {
        negative,
        hours,
        minute,
        second,
        micros,
        precision: 2,
    };
    for (packed, expected) in [
        (-500_000, time(true, 0, 0, 0, 500_000)),
        (-((hms << 24) + 780_000), time(true, 12, 34, 56, 780_000)),
        ((hms << 24) + 780_000, time(false, 12, 34, 56, 780_000)),
        (hms << 24, time(false, 12, 34, 56, 0)),
    ] {
        let bytes = encode(packed);
        let (value, rest) = super::time_in_hundredths(&bytes, 2).expect("four bytes");
        assert_eq!(value, expected, "{bytes:02x?}");
        assert_eq!(rest, [0xAA], "the next column's bytes are left");
    }
    assert!(super::time_in_hundredths(&[0x80, 0, 0], 2).is_none());
}
