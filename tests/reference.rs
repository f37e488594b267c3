//! The operator reference cannot drift from the code:
//!
//! - `docs/reference/config.md` documents exactly the keys the deployment file accepts. The
//!   keys are read from the serde types themselves (a probing `Deserializer` that records the
//!   field names every struct asks for and walks into nested tables, arrays and maps), so a
//!   new field, a renamed one or a new nested table fails this test until the page says so.
//! - `docs/reference/cli.md` has a row in its exit-code table for every `dax` subcommand
//!   clap knows (nested ones as `dax plugin NAME`), and every exit-code constant of
//!   `dax::cli` in its legend, and the environment variables with their defaults.
//!
//! Run: `cargo test -p dax-tests --test reference`.

use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

// ------------------------------------------------------------------ the key probe

/// Keys found per table, the table written as its TOML header (`deployment`, `[checks]`,
/// `plugins.NAME.grants.kube`, ...: see [`header`]).
type Tables = BTreeMap<String, BTreeSet<String>>;

#[derive(Debug)]
struct ProbeError(String);
impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ProbeError {}
impl de::Error for ProbeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ProbeError(msg.to_string())
    }
}

/// What the probe remembers across runs: the tables found, and the fields whose value could
/// not be faked (a custom parser refused the probe's string), skipped in the next run so the
/// fields after them are still walked.
#[derive(Default)]
struct Probed {
    tables: Tables,
    failed: BTreeSet<String>,
}

/// A `Deserializer` that answers every request with a plausible value, records the fields
/// of every struct it is asked for, and descends into each field's value.
struct Probe<'a> {
    /// Dotted path; `[]` marks an array element, `NAME` a map entry.
    path: String,
    probed: &'a RefCell<Probed>,
    depth: usize,
}

impl<'a> Probe<'a> {
    fn child(&self, segment: &str) -> Probe<'a> {
        Probe {
            path: if self.path.is_empty() {
                segment.to_string()
            } else if segment == "[]" {
                format!("{}[]", self.path)
            } else {
                format!("{}.{segment}", self.path)
            },
            probed: self.probed,
            depth: self.depth + 1,
        }
    }
}

/// A struct's fields, one value each (probed), skipping those that failed in an earlier run.
struct Fields<'a> {
    probe: &'a Probe<'a>,
    fields: std::iter::Copied<std::slice::Iter<'static, &'static str>>,
    current: Option<&'static str>,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = ProbeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ProbeError> {
        let failed = &self.probe.probed.borrow().failed;
        let next = self
            .fields
            .find(|f| !failed.contains(&self.probe.child(f).path));
        self.current = next;
        match next {
            Some(f) => seed.deserialize(f.into_deserializer()).map(Some),
            None => Ok(None),
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ProbeError> {
        let field = self.current.expect("a value follows its key");
        let child = self.probe.child(field);
        let path = child.path.clone();
        seed.deserialize(child).inspect_err(|_| {
            self.probe.probed.borrow_mut().failed.insert(path);
        })
    }
}

/// One element (an array) or one entry keyed `NAME` (a map).
struct One<'a> {
    probe: Option<Probe<'a>>,
    keyed: bool,
}

impl<'de> SeqAccess<'de> for One<'_> {
    type Error = ProbeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, ProbeError> {
        match self.probe.take() {
            Some(p) => seed.deserialize(p).map(Some),
            None => Ok(None),
        }
    }
}

impl<'de> MapAccess<'de> for One<'_> {
    type Error = ProbeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ProbeError> {
        if self.keyed && self.probe.is_some() {
            self.keyed = false;
            return seed.deserialize("NAME".into_deserializer()).map(Some);
        }
        Ok(None)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ProbeError> {
        seed.deserialize(self.probe.take().expect("one value"))
    }
}

/// The first variant of an enum, with whatever payload it has.
struct FirstVariant<'a> {
    probe: Probe<'a>,
    variant: &'static str,
}

impl<'de, 'a> de::EnumAccess<'de> for FirstVariant<'a> {
    type Error = ProbeError;
    type Variant = Probe<'a>;
    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Probe<'a>), ProbeError> {
        let v = seed.deserialize(self.variant.into_deserializer())?;
        Ok((v, self.probe))
    }
}

impl<'de> de::VariantAccess<'de> for Probe<'_> {
    type Error = ProbeError;
    fn unit_variant(self) -> Result<(), ProbeError> {
        Ok(())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, ProbeError> {
        seed.deserialize(self)
    }
    fn tuple_variant<V: de::Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, ProbeError> {
        self.deserialize_seq(v)
    }
    fn struct_variant<V: de::Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, ProbeError> {
        self.deserialize_struct("", fields, v)
    }
}

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = ProbeError;

    fn deserialize_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        if self.depth > 8 {
            return Err(ProbeError(format!("{}: nested too deeply", self.path)));
        }
        self.probed
            .borrow_mut()
            .tables
            .entry(self.path.clone())
            .or_default()
            .extend(fields.iter().map(|f| f.to_string()));
        visitor.visit_map(Fields {
            probe: &self,
            fields: fields.iter().copied(),
            current: None,
        })
    }
    fn deserialize_seq<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_seq(One {
            probe: Some(self.child("[]")),
            keyed: false,
        })
    }
    fn deserialize_map<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_map(One {
            probe: Some(self.child("NAME")),
            keyed: true,
        })
    }
    fn deserialize_option<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_some(self)
    }
    fn deserialize_enum<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        visitor.visit_enum(FirstVariant {
            variant: variants.first().copied().unwrap_or(""),
            probe: self,
        })
    }
    fn deserialize_newtype_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        visitor.visit_newtype_struct(self)
    }
    fn deserialize_tuple<V: de::Visitor<'de>>(
        self,
        _n: usize,
        v: V,
    ) -> Result<V::Value, ProbeError> {
        self.deserialize_seq(v)
    }
    fn deserialize_tuple_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        _n: usize,
        v: V,
    ) -> Result<V::Value, ProbeError> {
        self.deserialize_seq(v)
    }
    // Free-form values (`toml::Value`, `serde_json::Value`: plugin configs, strategy params,
    // workload specs) are leaves: a string stands in for them. So are strings, which most
    // parsers of this config accept as a duration.
    fn deserialize_any<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        v.visit_str("1s")
    }
    fn deserialize_str<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        v.visit_str("1s")
    }
    fn deserialize_string<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        v.visit_str("1s")
    }
    fn deserialize_bool<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        v.visit_bool(false)
    }
    fn deserialize_f64<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        v.visit_f64(1.0)
    }
    fn deserialize_f32<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        v.visit_f32(1.0)
    }
    fn deserialize_unit<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        v.visit_unit()
    }
    fn deserialize_unit_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, ProbeError> {
        v.visit_unit()
    }
    fn deserialize_ignored_any<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        v.visit_unit()
    }
    fn deserialize_char<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        v.visit_char('a')
    }
    fn deserialize_bytes<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        v.visit_bytes(b"")
    }
    fn deserialize_byte_buf<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        v.visit_bytes(b"")
    }
    fn deserialize_identifier<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        v.visit_str("")
    }
    fn deserialize_u8<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        v.visit_u8(1)
    }
    fn deserialize_u16<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        v.visit_u16(1)
    }
    fn deserialize_u32<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        v.visit_u32(1)
    }
    fn deserialize_u64<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        v.visit_u64(1)
    }
    fn deserialize_i8<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        v.visit_i8(1)
    }
    fn deserialize_i16<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        v.visit_i16(1)
    }
    fn deserialize_i32<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        v.visit_i32(1)
    }
    fn deserialize_i64<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, ProbeError> {
        v.visit_i64(1)
    }
}

/// Every table type `T` accepts at `path`, with its keys. Runs `T`'s deserializer until no
/// new field fails (each run skips the fields that failed before).
fn probe<T: serde::de::DeserializeOwned>(path: &str, probed: &RefCell<Probed>) {
    for _ in 0..32 {
        let failed_before = probed.borrow().failed.len();
        let ok = T::deserialize(Probe {
            path: path.to_string(),
            probed,
            depth: 0,
        })
        .is_ok();
        if ok || probed.borrow().failed.len() == failed_before {
            return;
        }
    }
}

/// A probe path as its TOML table header: `checks[]` → `[[checks]]`, `hooks[].load` →
/// `[hooks.load]`, `plugins.NAME.grants.dirs[]` → `[[plugins.NAME.grants.dirs]]`.
fn header(path: &str) -> String {
    match path.strip_suffix("[]") {
        Some(array) => format!("[[{}]]", array.replace("[]", "")),
        None => format!("[{}]", path.replace("[]", "")),
    }
}

/// Every table of the deployment file and its keys, from the code.
fn accepted_tables() -> BTreeMap<String, BTreeSet<String>> {
    use dax::config::*;
    let probed = RefCell::new(Probed::default());
    // One line per top-level section; `sections_are_the_ones_the_parser_knows` keeps this
    // list equal to the parser's.
    probe::<DeploymentSection>("deployment", &probed);
    probe::<TargetSection>("target", &probed);
    probe::<StrategySection>("strategy", &probed);
    probe::<Vec<Check>>("checks", &probed);
    probe::<Vec<Hook>>("hooks", &probed);
    probe::<dax::gate::GatePolicy>("gate", &probed);
    probe::<Vec<Notification>>("notifications", &probed);
    probe::<BTreeMap<String, dax::plugin::PluginSpec>>("plugins", &probed);
    probe::<dax::plugin::signature::TrustPolicy>("trust", &probed);
    probed
        .into_inner()
        .tables
        .into_iter()
        .map(|(path, keys)| (header(&path), keys))
        .collect()
}

/// The top-level sections `accepted_tables` probed: the first name of every table header.
fn probed_sections() -> BTreeSet<String> {
    accepted_tables()
        .keys()
        .filter_map(|header| header.trim_start_matches('[').split(['.', ']']).next())
        .map(str::to_string)
        .collect()
}

// ------------------------------------------------------------------ the pages

fn read_doc(name: &str) -> String {
    let path = dax_tests::repo_root().join("docs/reference").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The documented tables of config.md: each `#` heading naming a `` `[table]` `` (or
/// `` `[[array]]` ``), with the keys of the `` | `key` | `` rows under it (serde aliases
/// count as keys: a row may name several spellings).
fn documented_tables(doc: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut tables = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        if line.starts_with('#') {
            current = line
                .split('`')
                .nth(1)
                .filter(|t| t.starts_with('['))
                .map(str::to_string);
            if let Some(t) = &current {
                let fresh = tables.insert(t.clone(), BTreeSet::new()).is_none();
                assert!(fresh, "config.md documents {t} twice");
            }
        } else if let (Some(t), true) = (&current, line.starts_with("| `")) {
            // The first cell names the key, or several spellings of it: `` `high`, `HIGH` ``.
            let cell = line
                .trim_start_matches('|')
                .split(" | ")
                .next()
                .unwrap_or_default();
            let keys = cell.split('`').skip(1).step_by(2).map(str::to_string);
            tables.get_mut(t).unwrap().extend(keys);
        }
    }
    tables
}

#[test]
fn the_probe_finds_nested_tables() {
    // The probe itself: it must reach tables behind options, arrays, maps and custom
    // parsers (the gate's `severity` refuses the probe's string; `ignore` and `max` come
    // after it), or the comparison below would check less than it seems to.
    let tables = accepted_tables();
    for (table, key) in [
        ("[deployment]", "max_replicas"),
        ("[[checks]]", "direction"),
        ("[hooks.load]", "headers"),
        ("[[gate.ignore]]", "expires"),
        ("[gate.max]", "critical"),
        ("[gate]", "on_scanner_error"),
        ("[plugins.NAME.limits]", "wall_timeout"),
        ("[[plugins.NAME.grants.dirs]]", "quota_mib"),
        ("[plugins.NAME.grants.kube]", "verbs"),
        ("[plugins.NAME.grants.aws]", "role_arn"),
        ("[trust]", "keys"),
    ] {
        assert!(
            tables.get(table).is_some_and(|keys| keys.contains(key)),
            "the probe did not find `{key}` in {table}: {tables:#?}"
        );
    }
}

#[test]
fn sections_are_the_ones_the_parser_knows() {
    let parser: BTreeSet<String> = dax::config::SECTIONS.map(str::to_string).into();
    assert_eq!(
        parser,
        probed_sections(),
        "a top-level section was added or removed: probe it in `accepted_tables` (and document it)"
    );
}

#[test]
fn the_config_reference_lists_every_key_the_parser_accepts() {
    let doc = read_doc("config.md");
    let documented = documented_tables(&doc);
    let accepted = accepted_tables();
    let mut problems = Vec::new();
    for (table, keys) in &accepted {
        match documented.get(table) {
            None => problems.push(format!(
                "{table} (keys {keys:?}) has no section (a heading with `{table}`)"
            )),
            Some(doc_keys) => {
                for k in keys.difference(doc_keys) {
                    problems.push(format!("{table}: key `{k}` is accepted but not documented"));
                }
                for k in doc_keys.difference(keys) {
                    problems.push(format!("{table}: key `{k}` is documented but not accepted"));
                }
            }
        }
    }
    for table in documented.keys() {
        if !accepted.contains_key(table) {
            problems.push(format!("{table} is documented but no such table exists"));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/reference/config.md and the code disagree:\n  {}",
        problems.join("\n  ")
    );
}

// ------------------------------------------------------------------ the command line

/// Every subcommand path: `deploy`, ..., `plugin build`, `plugin push`, ...
fn subcommands() -> Vec<String> {
    use clap::CommandFactory;
    fn walk(cmd: &clap::Command, prefix: &str, out: &mut Vec<String>) {
        for sub in cmd.get_subcommands() {
            if sub.get_name() == "help" {
                continue;
            }
            let name = format!("{prefix}{}", sub.get_name());
            if sub.has_subcommands() {
                walk(sub, &format!("{name} "), out);
            } else {
                out.push(name);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dax::cli::Cli::command(), "", &mut out);
    out
}

#[test]
fn the_cli_reference_has_every_command_and_exit_code() {
    let doc = read_doc("cli.md");
    // Rows of the exit-code table: `| `dax deploy FILE` | ... |`.
    let rows: Vec<&str> = doc.lines().filter(|l| l.starts_with("| `dax ")).collect();
    let commands = subcommands();
    assert!(
        commands.contains(&"plugin build".to_string()) && commands.contains(&"gate".to_string()),
        "{commands:?}"
    );
    let missing: Vec<&String> = commands
        .iter()
        .filter(|c| {
            !rows.iter().any(|r| {
                let documented = r.trim_start_matches("| `dax ").split('`').next().unwrap();
                documented == c.as_str() || documented.starts_with(&format!("{c} "))
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/reference/cli.md has no exit-code row for: {missing:?}"
    );
    for (code, name) in [
        (dax::cli::EXIT_PROMOTED, "EXIT_PROMOTED"),
        (dax::cli::EXIT_ROLLED_BACK, "EXIT_ROLLED_BACK"),
        (dax::cli::EXIT_FAILED, "EXIT_FAILED"),
        (dax::cli::EXIT_INVALID, "EXIT_INVALID"),
        (dax::cli::EXIT_NOT_FOUND, "EXIT_NOT_FOUND"),
        (dax::cli::EXIT_USAGE, "EXIT_USAGE"),
        (dax::cli::EXIT_INTERRUPTED, "EXIT_INTERRUPTED"),
        (dax::cli::EXIT_STDOUT_CLOSED, "EXIT_STDOUT_CLOSED"),
    ] {
        assert!(
            doc.contains(&format!("| **{code}** |")),
            "docs/reference/cli.md does not explain exit code {code} ({name})"
        );
    }
}

#[test]
fn the_cli_reference_states_the_instance_slot_default() {
    let doc = read_doc("cli.md");
    let default = dax::plugin::DEFAULT_MAX_INSTANCES;
    assert!(
        doc.contains(&format!("`${}`", dax::plugin::MAX_INSTANCES_ENV))
            && doc.contains(&format!("(default {default}, from 1 to")),
        "docs/reference/cli.md must name ${} and its default {default}",
        dax::plugin::MAX_INSTANCES_ENV
    );
}
