use std::sync::Arc;

use super::*;
use crate::config::RuleConfig;
use crate::value::{RowChange, RowImage, TableInfo};

fn table() -> Arc<TableInfo> {
    Arc::new(TableInfo::new(
        "shop".into(),
        "users".into(),
        vec!["id".into(), "name".into(), "email".into()],
    ))
}

fn row(id: i64, name: &str, email: Option<&str>) -> RowImage {
    vec![
        Some(SqlValue::Int(id)),
        Some(SqlValue::Text(name.into())),
        Some(email.map_or(SqlValue::Null, |e| SqlValue::Text(e.into()))),
    ]
}

fn change(kind: ChangeKind, before: Option<RowImage>, after: Option<RowImage>) -> RowChange {
    RowChange {
        table: table(),
        kind,
        before,
        after,
        event_position: Position::new("bin.000001", 400).into(),
    }
}

fn rule(action: &str, key: &str) -> RuleConfig {
    RuleConfig {
        table: "shop.users".into(),
        action: action.into(),
        key: key.into(),
        format: None,
        columns: None,
        ttl_secs: None,
        accept_unlogged_cascades: false,
    }
}

fn mapper(rules: Vec<RuleConfig>) -> Mapper {
    Mapper::new(RuleSet::compile(&rules).unwrap())
}

fn map(m: &Mapper, c: &RowChange) -> Vec<CacheOp> {
    let mut out = Vec::new();
    m.map(c.as_row(), &mut out).unwrap();
    out
}

fn map_err(m: &Mapper, c: &RowChange) -> MapError {
    m.map(c.as_row(), &mut Vec::new()).unwrap_err()
}

fn del(key: &str) -> CacheOp {
    CacheOp::Del { key: key.into() }
}

#[test]
fn insert_writes_json_and_secondary_delete() {
    let m = mapper(vec![
        RuleConfig {
            ttl_secs: Some(10),
            accept_unlogged_cascades: false,
            ..rule("upsert", "user:{id}")
        },
        rule("delete", "user:by-email:{email}"),
    ]);
    let ops = map(
        &m,
        &change(ChangeKind::Insert, None, Some(row(1, "Ann", Some("a@x")))),
    );
    assert_eq!(
        ops,
        vec![
            CacheOp::Set {
                key: "user:1".into(),
                value: r#"{"id":1,"name":"Ann","email":"a@x"}"#.into(),
                ttl_ms: 10_000
            },
            del("user:by-email:a@x"),
        ]
    );
}

#[test]
fn update_of_key_column_deletes_old_key() {
    let m = mapper(vec![rule("delete", "user:by-email:{email}")]);
    let ops = map(
        &m,
        &change(
            ChangeKind::Update,
            Some(row(1, "Ann", Some("old@x"))),
            Some(row(1, "Ann", Some("new@x"))),
        ),
    );
    assert_eq!(
        ops,
        vec![del("user:by-email:old@x"), del("user:by-email:new@x")]
    );

    let m = mapper(vec![rule("upsert", "user:{id}")]);
    let ops = map(
        &m,
        &change(
            ChangeKind::Update,
            Some(row(1, "Ann", None)),
            Some(row(2, "Ann", None)),
        ),
    );
    assert_eq!(ops.len(), 2);
    assert_eq!(ops[0], del("user:1"));
    assert_eq!(ops[1].key(), "user:2");
}

#[test]
fn unchanged_key_is_written_once() {
    let m = mapper(vec![rule("upsert", "user:{id}")]);
    let ops = map(
        &m,
        &change(
            ChangeKind::Update,
            Some(row(1, "Ann", None)),
            Some(row(1, "Bob", None)),
        ),
    );
    assert_eq!(ops.len(), 1);
    assert!(matches!(&ops[0], CacheOp::Set { value, .. } if value.contains("Bob")));
}

#[test]
fn update_to_or_from_a_null_key_touches_only_the_key_that_exists() {
    let m = mapper(vec![rule("delete", "user:by-email:{email}")]);
    let update = |before: Option<&str>, after: Option<&str>| {
        map(
            &m,
            &change(
                ChangeKind::Update,
                Some(row(1, "Ann", before)),
                Some(row(1, "Ann", after)),
            ),
        )
    };
    assert_eq!(
        update(None, Some("new@x")),
        vec![del("user:by-email:new@x")]
    );
    assert_eq!(
        update(Some("old@x"), None),
        vec![del("user:by-email:old@x")]
    );
    assert_eq!(update(None, None), vec![]);
    assert_eq!(
        update(Some("a@x"), Some("a@x")),
        vec![del("user:by-email:a@x")]
    );
}

#[test]
fn update_whose_before_image_lacks_the_key_column_fails_closed() {
    let m = mapper(vec![rule("delete", "user:{id}")]);
    let mut before = row(1, "Ann", None);
    before[0] = None;
    let err = map_err(
        &m,
        &change(ChangeKind::Update, Some(before), Some(row(1, "Bob", None))),
    );
    assert!(matches!(err, MapError::ColumnNotInImage { .. }), "{err}");
}

#[test]
fn delete_removes_before_key_and_null_key_gives_none() {
    let m = mapper(vec![
        rule("upsert", "user:{id}"),
        rule("delete", "user:by-email:{email}"),
    ]);
    let ops = map(
        &m,
        &change(ChangeKind::Delete, Some(row(3, "C", None)), None),
    );
    assert_eq!(ops, vec![del("user:3")]);
}

#[test]
fn hash_format_with_include_list_omits_nulls() {
    let m = mapper(vec![RuleConfig {
        format: Some("hash".into()),
        columns: Some(vec!["id".into(), "email".into()]),
        ..rule("upsert", "user:{id}")
    }]);
    let ops = map(
        &m,
        &change(ChangeKind::Insert, None, Some(row(4, "D", None))),
    );
    assert_eq!(
        ops,
        vec![CacheOp::Hash {
            key: "user:4".into(),
            fields: vec![("id".into(), "4".into())],
            ttl_ms: 0
        }]
    );
}

#[test]
fn tables_without_rules_give_nothing() {
    let m = mapper(vec![RuleConfig {
        table: "shop.orders".into(),
        ..rule("delete", "o:{id}")
    }]);
    assert!(map(
        &m,
        &change(ChangeKind::Insert, None, Some(row(1, "A", None)))
    )
    .is_empty());
}

#[test]
fn missing_template_column_fails_closed_naming_table_column_position() {
    let m = mapper(vec![rule("delete", "user:{phone}")]);
    let err = map_err(
        &m,
        &change(ChangeKind::Insert, None, Some(row(1, "A", None))),
    );
    let text = err.to_string();
    assert!(
        text.contains("shop.users") && text.contains("phone") && text.contains("bin.000001:400"),
        "{text}"
    );
}

#[test]
fn partial_image_fails_closed() {
    let m = mapper(vec![rule("upsert", "user:{id}")]);
    let mut partial = row(1, "A", None);
    partial[1] = None;
    let err = map_err(&m, &change(ChangeKind::Insert, None, Some(partial)));
    assert!(matches!(err, MapError::ColumnNotInImage { .. }), "{err}");
}

#[test]
fn needed_columns_are_the_union_of_what_matching_rules_read() {
    let cols: Vec<String> = ["id", "name", "email"].map(String::from).to_vec();
    let t = "shop.users";
    let rules = |list: Vec<RuleConfig>| RuleSet::compile(&list).expect("valid rules");
    let only_delete = rules(vec![rule("delete", "user:by-email:{email}")]);
    assert_eq!(
        only_delete.needed_columns(t, &cols),
        Some(vec![false, false, true])
    );
    let mut listed = rule("upsert", "user:{id}");
    listed.columns = Some(vec!["name".into()]);
    let with_list = rules(vec![listed]);
    assert_eq!(
        with_list.needed_columns(t, &cols),
        Some(vec![true, true, false])
    );
    let all = rules(vec![
        rule("upsert", "user:{id}"),
        rule("delete", "e:{email}"),
    ]);
    assert_eq!(
        all.needed_columns(t, &cols),
        None,
        "an upsert of the whole row reads everything"
    );
    assert_eq!(
        all.key_columns(t, &cols),
        vec![true, false, true],
        "a before image is read for its keys only, whatever the rules write"
    );
}

#[test]
fn column_positions_follow_each_table_and_its_schema_changes() {
    let m = mapper(vec![RuleConfig {
        table: "shop.*".into(),
        ..rule("upsert", "{id}")
    }]);
    let on = |info: &Arc<TableInfo>, after: RowImage| RowChange {
        table: info.clone(),
        kind: ChangeKind::Insert,
        before: None,
        after: Some(after),
        event_position: Position::new("bin.000001", 400).into(),
    };
    let set = |key: &str, value: &str| CacheOp::Set {
        key: key.into(),
        value: value.into(),
        ttl_ms: 0,
    };
    let users = table();
    // The same id column at another position, and a name JSON must escape.
    let orders = Arc::new(TableInfo::new(
        "shop".into(),
        "orders".into(),
        vec!["we\"ird".into(), "id".into()],
    ));
    let orders_row = vec![Some(SqlValue::Int(5)), Some(SqlValue::Int(9))];
    for _ in 0..2 {
        assert_eq!(
            map(&m, &on(&users, row(1, "Ann", None))),
            [set("1", r#"{"id":1,"name":"Ann","email":null}"#)]
        );
        assert_eq!(
            map(&m, &on(&orders, orders_row.clone())),
            [set("9", r#"{"we\"ird":5,"id":9}"#)]
        );
    }
    // After a schema change the table map gives a new `TableInfo`: positions move.
    let altered = Arc::new(TableInfo::new(
        "shop".into(),
        "orders".into(),
        vec!["id".into(), "we\"ird".into()],
    ));
    assert_eq!(
        map(&m, &on(&altered, orders_row)),
        [set("5", r#"{"id":5,"we\"ird":9}"#)]
    );
}

#[test]
fn an_operation_counts_every_argument_redis_queues_for_it() {
    let key = "k".repeat(1000);
    let set = |ttl_ms| CacheOp::Set {
        key: key.clone(),
        value: "v".repeat(5000),
        ttl_ms,
    };
    let hash = |ttl_ms| CacheOp::Hash {
        key: key.clone(),
        fields: vec![("f".into(), "v".repeat(5000))],
        ttl_ms,
    };
    // The key and value, each with its pointer's worth, the name, a TTL's `PX` and digits.
    assert!((6000..6100).contains(&set(0).bytes()), "{}", set(0).bytes());
    assert!(set(60_000).bytes() > set(0).bytes());
    // DEL and HSET name the key, and PEXPIRE with a TTL: two or three times.
    assert!(
        (7000..7200).contains(&hash(0).bytes()),
        "{}",
        hash(0).bytes()
    );
    assert!(
        (8000..8300).contains(&hash(1).bytes()),
        "{}",
        hash(1).bytes()
    );
    let del = CacheOp::Del { key: key.clone() };
    assert!((1000..1100).contains(&del.bytes()), "{}", del.bytes());
}
