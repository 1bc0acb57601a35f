//! Cross-checks the schema against the slot tables and enum lists of docs/mnn-format.md (written
//! independently from MNN's sources): field order is the wire format, so any drift is a bug.

use std::path::PathBuf;

use crate::schema_layout::{TABLES, UNIONS};
use crate::verify::FieldKind;

fn doc_text() -> Option<String> {
    // MNNQ_DOCS, else the `docs` folder next to MNNQ_FIXTURES, else ../shared/docs.
    let path = std::env::var_os("MNNQ_DOCS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("MNNQ_FIXTURES").map(|f| PathBuf::from(f).join("../docs")))
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/docs"))
        .join("mnn-format.md");
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(_) => {
            println!("SKIPPED: {} not found", path.display());
            None
        }
    }
}

/// Bytes of a scalar column in the doc's type notation, `None` for offsets.
fn doc_scalar_bytes(doc_type: &str) -> Option<usize> {
    let t = doc_type.trim();
    if t.starts_with("vector") || t.starts_with("table") || t == "string" || t.starts_with("union")
    {
        return None;
    }
    Some(
        if t.contains("(i8)") || t.starts_with("bool") || t.starts_with("u8") || t == "i8" {
            1
        } else if t.contains("(i32)") || t == "i32" || t == "f32" || t == "u32" {
            4
        } else if t == "i64" {
            8
        } else if t == "u16" {
            2
        } else {
            panic!("unexpected type `{t}` in the doc")
        },
    )
}

#[test]
fn slot_tables_match_the_format_doc() {
    let Some(text) = doc_text() else { return };
    let mut current: Option<&str> = None;
    // (table, [(slot, field, type)])
    type DocTable = (String, Vec<(usize, String, String)>);
    let mut rows: Vec<DocTable> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("#### ") {
            let name = rest.split_whitespace().next().unwrap_or_default();
            current = Some(name);
            rows.push((name.to_string(), Vec::new()));
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if current.is_some() && cells.len() >= 6 {
            if let Ok(slot) = cells[1].parse::<usize>() {
                let entry = rows.last_mut().expect("a table heading came first");
                entry
                    .1
                    .push((slot, cells[3].to_string(), cells[4].to_string()));
            }
        }
    }
    let documented: Vec<_> = rows
        .into_iter()
        .filter(|(_, fields)| !fields.is_empty())
        .collect();
    assert!(
        documented.len() >= 70,
        "found only {} tables in the doc",
        documented.len()
    );
    for (table, fields) in &documented {
        let layout = TABLES
            .iter()
            .find(|t| t.name == table)
            .unwrap_or_else(|| panic!("table {table} from the doc is not in the schema"));
        for (slot, name, doc_type) in fields {
            if doc_type.starts_with("u8 (OpParameter tag)") {
                // The union's tag slot: our layout lists the union at its tag slot.
                let field = layout.fields.iter().find(|f| f.slot == *slot).unwrap();
                assert!(matches!(field.kind, FieldKind::Union(_)), "{table}.{name}");
                continue;
            }
            if doc_type.starts_with("union") {
                continue;
            }
            let field = layout
                .fields
                .iter()
                .find(|f| f.slot == *slot)
                .unwrap_or_else(|| panic!("{table} has no field at slot {slot} ({name})"));
            assert_eq!(field.name, name, "{table} slot {slot}");
            match (doc_scalar_bytes(doc_type), field.kind) {
                (Some(bytes), FieldKind::Scalar { bytes: ours }) => {
                    assert_eq!(bytes, ours, "{table}.{name}")
                }
                (None, FieldKind::Scalar { .. }) => panic!("{table}.{name} should be an offset"),
                (Some(_), _) => panic!("{table}.{name} should be a scalar"),
                (None, _) => {}
            }
        }
        // Every schema field of a documented table is in the doc (nothing extra, nothing moved).
        let doc_slots = fields.len();
        let our_slots: usize = layout
            .fields
            .iter()
            .map(|f| {
                if matches!(f.kind, FieldKind::Union(_)) {
                    2
                } else {
                    1
                }
            })
            .sum();
        assert_eq!(our_slots, doc_slots, "{table}: slot count");
    }
}

#[test]
fn enum_values_and_union_tags_match_the_format_doc() {
    let Some(text) = doc_text() else { return };
    let list_after = |marker: &str| -> Vec<(String, i64)> {
        let start = text
            .find(marker)
            .unwrap_or_else(|| panic!("`{marker}` not in the doc"));
        let line = text[start + marker.len()..].lines().next().unwrap();
        line.split(',')
            .filter_map(|item| {
                let (name, value) = item.trim().split_once('=')?;
                Some((name.trim().to_string(), value.trim().parse().ok()?))
            })
            .collect()
    };
    let op_types = list_after("OpType (i32), all values:");
    assert!(op_types.len() > 180);
    for (name, value) in &op_types {
        assert_eq!(
            crate::schema_layout::op_type(*value),
            Some(name.as_str()),
            "OpType {value}"
        );
    }
    let tags = list_after("OpParameter union tags (u8), NONE=0, then:");
    let (_, members) = UNIONS[0];
    assert_eq!(tags.len(), members.len());
    for (name, tag) in &tags {
        assert_eq!(TABLES[members[*tag as usize - 1].0].name, name, "tag {tag}");
    }
}
