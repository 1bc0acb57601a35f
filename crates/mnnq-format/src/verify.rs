//! A structural pre-check of untrusted buffers, in the spirit of the FlatBuffers verifier MNN
//! runs before loading (`OpCommonUtils::checkNet`): every offset, vtable, vector and string must
//! lie inside the buffer and be naturally aligned, union tags must be known, nesting is limited
//! to 64 tables, and the total size reachable through all paths is bounded.
//!
//! Why this exists next to planus' own checks: planus validates bounds lazily, but building the
//! owned `Net` recurses once per nesting level (Op -> LoopParam -> RegionCommand -> Op ... and
//! Attribute -> NamedAttrList -> Attribute can nest without end) and follows shared offsets again
//! and again (a vector of a million offsets to one big table would expand into a million copies).
//! Walking the buffer here first, with explicit limits, turns both into errors.

use std::fmt;

use crate::schema_layout::{ROOT_NET, TABLES, UNIONS};

/// Limits applied to untrusted buffers before they are decoded into owned types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Maximum nesting of tables; the root `Net` is depth 1 (MNN's verifier allows 64).
    pub max_depth: usize,
    /// Maximum number of table visits, counting a table reached through two paths twice (MNN's
    /// verifier allows 1,000,000).
    pub max_tables: usize,
    /// The bytes of all tables, vectors and strings reached through all paths may not exceed
    /// `expansion_factor * buffer length + 1 MiB`. A buffer without shared sub-objects reaches
    /// each byte once, so 2 leaves room while stopping blow-up through shared offsets.
    pub expansion_factor: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 64,
            max_tables: 1_000_000,
            expansion_factor: 2,
        }
    }
}

/// Index into `schema_layout::TABLES`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TableId(pub(crate) usize);

/// Index into `schema_layout::UNIONS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UnionId(pub(crate) usize);

/// What a vtable slot holds, as far as the wire format is concerned.
#[derive(Clone, Copy, Debug)]
pub(crate) enum FieldKind {
    Scalar {
        bytes: usize,
    },
    String,
    VectorOfScalars {
        element_bytes: usize,
    },
    VectorOfStrings,
    Table(TableId),
    VectorOfTables(TableId),
    /// Occupies two slots: the `u8` tag at `slot`, the offset at `slot + 1`.
    Union(UnionId),
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct FieldLayout {
    pub(crate) name: &'static str,
    pub(crate) slot: usize,
    pub(crate) kind: FieldKind,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct TableLayout {
    pub(crate) name: &'static str,
    pub(crate) fields: &'static [FieldLayout],
}

/// Why a buffer was rejected, with the path of fields that led there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    /// What is wrong.
    pub detail: String,
    /// Innermost last, e.g. `["Net", "oplists[3]", "main(Convolution2D)", "common"]`.
    pub path: Vec<String>,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.detail)
        } else {
            write!(f, "{} (at {})", self.detail, self.path.join("."))
        }
    }
}

impl std::error::Error for VerifyError {}

type Result<T> = std::result::Result<T, VerifyError>;

fn fail<T>(detail: impl Into<String>) -> Result<T> {
    Err(VerifyError {
        detail: detail.into(),
        path: Vec::new(),
    })
}

/// Adds a path element to an error on its way out (the path is only built on failure).
trait Within<T> {
    fn within(self, frame: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Within<T> for Result<T> {
    fn within(self, frame: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|mut error| {
            error.path.insert(0, frame());
            error
        })
    }
}

/// Checks that `bytes` is a well-formed `Net` buffer within `limits`.
pub fn check(bytes: &[u8], limits: Limits) -> Result<()> {
    let mut walker = Walker {
        buf: bytes,
        limits,
        tables_visited: 0,
        bytes_reached: 0,
        byte_budget: limits
            .expansion_factor
            .saturating_mul(bytes.len())
            .saturating_add(1 << 20),
    };
    let root = walker
        .offset_target(0)
        .within(|| "root offset".to_string())?;
    walker.table(root, ROOT_NET, 1).within(|| "Net".to_string())
}

struct Walker<'a> {
    buf: &'a [u8],
    limits: Limits,
    tables_visited: usize,
    bytes_reached: usize,
    byte_budget: usize,
}

impl Walker<'_> {
    fn bytes_at(&self, pos: usize, len: usize, what: &str) -> Result<&[u8]> {
        match pos.checked_add(len) {
            Some(end) if end <= self.buf.len() => Ok(&self.buf[pos..end]),
            _ => fail(format!(
                "{what} at byte {pos} (+{len}) runs past the end of the {}-byte buffer",
                self.buf.len()
            )),
        }
    }

    fn aligned(&self, pos: usize, align: usize, what: &str) -> Result<()> {
        if pos.is_multiple_of(align) {
            Ok(())
        } else {
            fail(format!(
                "{what} at byte {pos} is not aligned to {align} bytes"
            ))
        }
    }

    fn u16_at(&self, pos: usize, what: &str) -> Result<u16> {
        self.aligned(pos, 2, what)?;
        let b = self.bytes_at(pos, 2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32_at(&self, pos: usize, what: &str) -> Result<u32> {
        self.aligned(pos, 4, what)?;
        let b = self.bytes_at(pos, 4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Follows the forward `u32` offset stored at `pos`.
    fn offset_target(&self, pos: usize) -> Result<usize> {
        let offset = self.u32_at(pos, "offset")? as usize;
        let target = pos + offset;
        if offset == 0 || target >= self.buf.len() {
            return fail(format!(
                "offset at byte {pos} points to byte {target}, outside the {}-byte buffer",
                self.buf.len()
            ));
        }
        Ok(target)
    }

    fn spend(&mut self, bytes: usize) -> Result<()> {
        self.bytes_reached = self.bytes_reached.saturating_add(bytes);
        if self.bytes_reached > self.byte_budget {
            return fail(format!(
                "the buffer expands to more than {} bytes through shared offsets",
                self.byte_budget
            ));
        }
        Ok(())
    }

    /// A vector header at `pos`: returns (first element position, element count).
    fn vector(&mut self, pos: usize, element_bytes: usize, what: &str) -> Result<(usize, usize)> {
        let len = self.u32_at(pos, what)? as usize;
        let data = pos + 4;
        let bytes = len.saturating_mul(element_bytes);
        self.bytes_at(data, bytes, what)?;
        self.spend(4 + bytes)?;
        Ok((data, len))
    }

    fn string(&mut self, pos: usize) -> Result<()> {
        let (data, len) = self.vector(pos, 1, "string")?;
        // FlatBuffers strings carry a terminating NUL that MNN's verifier insists on.
        match self.buf.get(data + len) {
            Some(0) => Ok(()),
            Some(_) => fail(format!("string at byte {pos} is not NUL-terminated")),
            None => fail(format!(
                "string at byte {pos} runs past the end of the buffer"
            )),
        }
    }

    fn table(&mut self, pos: usize, id: TableId, depth: usize) -> Result<()> {
        let layout = &TABLES[id.0];
        if depth > self.limits.max_depth {
            return fail(format!(
                "tables nest deeper than {} levels",
                self.limits.max_depth
            ));
        }
        self.tables_visited += 1;
        if self.tables_visited > self.limits.max_tables {
            return fail(format!(
                "more than {} tables (counting shared ones once per use)",
                self.limits.max_tables
            ));
        }
        let soffset = self.u32_at(pos, "table")? as i32 as i64;
        let vtable = pos as i64 - soffset;
        if vtable < 0 || vtable as usize >= self.buf.len() {
            return fail(format!(
                "{} table at byte {pos} has its vtable outside the buffer",
                layout.name
            ));
        }
        let vtable = vtable as usize;
        let vtable_bytes = self.u16_at(vtable, "vtable")? as usize;
        let inline_bytes = self.u16_at(vtable + 2, "vtable")? as usize;
        if vtable_bytes < 4 || !vtable_bytes.is_multiple_of(2) {
            return fail(format!(
                "vtable at byte {vtable} has invalid size {vtable_bytes}"
            ));
        }
        self.bytes_at(vtable, vtable_bytes, "vtable")?;
        if inline_bytes < 4 {
            return fail(format!(
                "table at byte {pos} has invalid size {inline_bytes}"
            ));
        }
        self.bytes_at(pos, inline_bytes, "table")?;
        self.spend(inline_bytes)?;
        let slots = (vtable_bytes - 4) / 2;
        let field_offset = |slot: usize| -> Result<Option<usize>> {
            if slot >= slots {
                return Ok(None);
            }
            let at = vtable + 4 + 2 * slot;
            let offset = u16::from_le_bytes([self.buf[at], self.buf[at + 1]]) as usize;
            Ok((offset != 0).then_some(offset))
        };
        for field in layout.fields {
            let Some(field_pos) = field_offset(field.slot)? else {
                continue;
            };
            let inline_size = match field.kind {
                FieldKind::Scalar { bytes } => bytes,
                FieldKind::Union(_) => 1,
                _ => 4,
            };
            if field_pos + inline_size > inline_bytes {
                return fail(format!(
                    "field `{}` of {} lies outside its table",
                    field.name, layout.name
                ));
            }
            let at = pos + field_pos;
            self.aligned(at, inline_size, field.name)
                .within(|| field.name.to_string())?;
            match field.kind {
                FieldKind::Scalar { .. } => {}
                FieldKind::String => {
                    let target = self.offset_target(at).within(|| field.name.to_string())?;
                    self.string(target).within(|| field.name.to_string())?;
                }
                FieldKind::VectorOfScalars { element_bytes } => {
                    let target = self.offset_target(at).within(|| field.name.to_string())?;
                    let (data, _) = self
                        .vector(target, element_bytes, "vector")
                        .within(|| field.name.to_string())?;
                    self.aligned(data, element_bytes, "vector elements")
                        .within(|| field.name.to_string())?;
                }
                FieldKind::VectorOfStrings => {
                    let target = self.offset_target(at).within(|| field.name.to_string())?;
                    let (data, len) = self
                        .vector(target, 4, "vector")
                        .within(|| field.name.to_string())?;
                    for i in 0..len {
                        let element = self
                            .offset_target(data + 4 * i)
                            .and_then(|s| self.string(s));
                        element.within(|| format!("{}[{i}]", field.name))?;
                    }
                }
                FieldKind::Table(child) => {
                    let target = self.offset_target(at).within(|| field.name.to_string())?;
                    self.table(target, child, depth + 1)
                        .within(|| field.name.to_string())?;
                }
                FieldKind::VectorOfTables(child) => {
                    let target = self.offset_target(at).within(|| field.name.to_string())?;
                    let (data, len) = self
                        .vector(target, 4, "vector")
                        .within(|| field.name.to_string())?;
                    for i in 0..len {
                        let element = self
                            .offset_target(data + 4 * i)
                            .and_then(|t| self.table(t, child, depth + 1));
                        element.within(|| format!("{}[{i}]", field.name))?;
                    }
                }
                FieldKind::Union(union_id) => {
                    let tag = self.buf[at];
                    let Some(value_pos) = field_offset(field.slot + 1)? else {
                        continue;
                    };
                    if tag == 0 {
                        continue;
                    }
                    let (union_name, members) = UNIONS[union_id.0];
                    let Some(&child) = members.get(tag as usize - 1) else {
                        return fail(format!(
                            "unknown {union_name} tag {tag} in field `{}` (this reader knows \
                             tags 1..={}; the model may come from a newer MNN)",
                            field.name,
                            members.len()
                        ));
                    };
                    if value_pos + 4 > inline_bytes {
                        return fail(format!(
                            "field `{}` of {} lies outside its table",
                            field.name, layout.name
                        ));
                    }
                    let frame = || format!("{}({})", field.name, TABLES[child.0].name);
                    let target = self.offset_target(pos + value_pos).within(frame)?;
                    self.table(target, child, depth + 1).within(frame)?;
                }
            }
        }
        Ok(())
    }
}
