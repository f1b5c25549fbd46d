//! figment's deserialisation errors in the project's form: the key in TOML's dotted
//! notation and where its value came from (the file, or the environment variable), with
//! the keys allowed where an unknown one was found. figment's own text names the key
//! with its profile (`default.source.chunk_row`) and nests quotes.

use std::path::Path;

use figment::error::Kind;
use figment::Source;

/// Every error figment reports, one per line; `env_prefix` is the environment's
/// (`CDC_CACHE_`, levels split by `__`), `file` the one named where figment does not
/// say where a value came from.
pub fn describe(errors: figment::Error, env_prefix: &str, file: &Path) -> String {
    errors
        .into_iter()
        .map(|e| one(&e, env_prefix, file))
        .collect::<Vec<_>>()
        .join("\n")
}

fn one(e: &figment::Error, env_prefix: &str, file: &Path) -> String {
    let (key, what) = match &e.kind {
        // The path ends with the unknown key.
        Kind::UnknownField(field, expected) => {
            let what = format!(
                "unknown key `{field}`; the keys here are {}",
                expected.join(", ")
            );
            (dotted(&e.path), what)
        }
        Kind::MissingField(field) => {
            let key: Vec<String> = e.path.iter().cloned().chain([field.to_string()]).collect();
            (dotted(&key), "missing; it has no default".to_string())
        }
        other => (dotted(&e.path), other.to_string()),
    };
    let origin = origin(e, env_prefix).unwrap_or_else(|| format!(" (in {})", file.display()));
    if key.is_empty() {
        format!("{what}{origin}")
    } else {
        format!("config key `{key}`: {what}{origin}")
    }
}

/// The key as the file writes it: `rules[0].key`, not figment's `rules.0.key`.
fn dotted(path: &[String]) -> String {
    let mut key = String::new();
    for part in path {
        if part.bytes().all(|b| b.is_ascii_digit()) && !key.is_empty() {
            key.push_str(&format!("[{part}]"));
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(part);
        }
    }
    key
}

/// ` (in FILE)` or ` (from the environment variable NAME)`, when figment knows.
fn origin(e: &figment::Error, env_prefix: &str) -> Option<String> {
    let metadata = e.metadata.as_ref()?;
    match &metadata.source {
        Some(Source::File(path)) => Some(format!(" (in {})", path.display())),
        // figment's own name for it joins the keys with dots, without the prefix.
        None if metadata.name.contains("environment") => {
            let keys: Vec<String> = e.path.iter().map(|k| k.to_ascii_uppercase()).collect();
            Some(format!(
                " (from the environment variable {env_prefix}{})",
                keys.join("__")
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use figment::providers::{Env, Format, Toml};
    use figment::Figment;

    use super::describe;
    use crate::config::Config;

    const VALID: &str = "[source]\nurl = \"mysql://u@db:3306\"\nserver_id = 9\n\
                         [redis]\nurl = \"redis://cache:6379\"\n";

    /// As `Config::load` reads, but from an environment prefix no other test uses.
    fn load(file: &Path, prefix: &str) -> String {
        let e = Figment::new()
            .merge(Toml::file_exact(file))
            .merge(Env::prefixed(prefix).split("__"))
            .extract::<Config>()
            .expect_err("a bad configuration");
        describe(e, prefix, file)
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(f.path(), text).expect("write");
        f
    }

    #[test]
    fn an_unknown_key_is_named_with_its_file_and_the_keys_allowed() {
        let f = file(&format!("{VALID}[sink]\nmax_op_per_step = 5\n"));
        let text = load(f.path(), "CDC_CACHE_UNSET_PREFIX_1_");
        assert!(
            text.starts_with(
                "config key `sink.max_op_per_step`: unknown key `max_op_per_step`; \
                 the keys here are "
            ),
            "{text}"
        );
        assert!(text.contains("max_ops_per_step"), "{text}");
        assert!(
            text.ends_with(&format!("(in {})", f.path().display())),
            "{text}"
        );
    }

    #[test]
    fn a_value_from_the_environment_names_the_variable() {
        let f = file(VALID);
        // Only this test reads this prefix.
        std::env::set_var("CDC_CACHE_PARSE_TEST_SOURCE__SERVER_ID", "many");
        let text = load(f.path(), "CDC_CACHE_PARSE_TEST_");
        assert!(
            text.starts_with("config key `source.server_id`: "),
            "{text}"
        );
        assert!(
            text.ends_with(
                "(from the environment variable CDC_CACHE_PARSE_TEST_SOURCE__SERVER_ID)"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_rule_s_key_is_written_as_in_the_file() {
        let rule = "[[rules]]\ntable = \"a.b\"\naction = \"upsert\"\nkey = \"k:{id}\"\n";
        let f = file(&format!("{VALID}{rule}format = 5\n"));
        let text = load(f.path(), "CDC_CACHE_UNSET_PREFIX_3_");
        assert!(
            text.starts_with("config key `rules[0].format`: invalid type"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_key_is_named_in_full() {
        let f = file("[source]\nserver_id = 9\n[redis]\nurl = \"redis://c\"\n");
        let text = load(f.path(), "CDC_CACHE_UNSET_PREFIX_2_");
        assert!(
            text.starts_with("config key `source.url`: missing"),
            "{text}"
        );
    }
}
