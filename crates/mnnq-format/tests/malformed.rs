//! Bad input gives an error naming the file, never a panic, a stack overflow or an unbounded
//! allocation. Buffers are hand-assembled here (independently of planus' writer) so that each
//! test controls exactly which byte is wrong.

use std::path::PathBuf;

use mnnq_format::{FormatError, Limits, Model, Net, Op, OpParameter};

/// A tiny FlatBuffers assembler: objects are appended in order and references patched later,
/// so a parent is always laid out before its children (FlatBuffers offsets point forward).
struct Assembler {
    bytes: Vec<u8>,
}

impl Assembler {
    fn new() -> Self {
        // Byte 0..4: root offset, patched by `set_root`.
        Assembler { bytes: vec![0; 4] }
    }
    fn align(&mut self, to: usize) {
        while !self.bytes.len().is_multiple_of(to) {
            self.bytes.push(0);
        }
    }
    fn u32_at(&mut self, at: usize, value: u32) {
        self.bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }
    /// Makes the `u32` at `at` point to `target` (which must lie after it).
    fn refer(&mut self, at: usize, target: usize) {
        self.u32_at(at, (target - at) as u32);
    }
    fn set_root(&mut self, table: usize) {
        self.u32_at(0, table as u32);
    }
    /// A table of `inline` bytes whose fields sit at the given offsets per slot (0 = absent).
    /// Its vtable is written just before it: planus (like buffers from FlatBuffers' C++
    /// builder) expects a vtable after the object that refers to the table.
    fn table(&mut self, inline: usize, slots: &[u16]) -> usize {
        self.align(2);
        let vtable = self.bytes.len();
        self.bytes
            .extend_from_slice(&((4 + 2 * slots.len()) as u16).to_le_bytes());
        self.bytes.extend_from_slice(&(inline as u16).to_le_bytes());
        for slot in slots {
            self.bytes.extend_from_slice(&slot.to_le_bytes());
        }
        self.align(4);
        let at = self.bytes.len();
        self.bytes.resize(at + inline, 0);
        let soffset = at as i32 - vtable as i32;
        self.bytes[at..at + 4].copy_from_slice(&soffset.to_le_bytes());
        at
    }
    /// A vector of `count` u32 slots (offsets or ints); returns the position of the length.
    fn vector_u32(&mut self, values: &[u32]) -> usize {
        self.align(4);
        let at = self.bytes.len();
        self.bytes
            .extend_from_slice(&(values.len() as u32).to_le_bytes());
        for v in values {
            self.bytes.extend_from_slice(&v.to_le_bytes());
        }
        at
    }
    fn string(&mut self, text: &str) -> usize {
        self.align(4);
        let at = self.bytes.len();
        self.bytes
            .extend_from_slice(&(text.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(text.as_bytes());
        self.bytes.push(0);
        at
    }
}

// Slot layouts used below (from the schema): Net: oplists = slot 3, tensorName = slot 7.
// Op: main_type = 1, main = 2, outputIndexes = 4. LoopParam: commands = 6. RegionCommand: op = 0.
// Extra: attr = 3. Attribute: func = 8. NamedAttrList: attr = 1.
const NET_INLINE: usize = 12;
const OP_INLINE: usize = 16;
const OP_SLOTS: [u16; 5] = [0, 12, 4, 0, 8];
const OP_WITHOUT_OUTPUTS: [u16; 3] = [0, 12, 4];

struct NetSkeleton {
    asm: Assembler,
    /// Position of the op's vtable (written just before the op).
    op_vtable: usize,
    /// Position of the `main` offset of the single top-level op.
    op_main: usize,
}

/// Net { tensorName: ["t"], oplists: [Op { outputIndexes: [0], main: <to be filled> }] }.
fn net_with_one_op(tag: u8) -> NetSkeleton {
    let mut asm = Assembler::new();
    let net = asm.table(NET_INLINE, &[0, 0, 0, 4, 0, 0, 0, 8]);
    asm.set_root(net);
    let names = asm.vector_u32(&[0]);
    asm.refer(net + 8, names);
    let name = asm.string("t");
    asm.refer(names + 4, name);
    let ops = asm.vector_u32(&[0]);
    asm.refer(net + 4, ops);
    let op = asm.table(OP_INLINE, &OP_SLOTS);
    asm.refer(ops + 4, op);
    asm.bytes[op + 12] = tag;
    let outputs = asm.vector_u32(&[0]);
    asm.refer(op + 8, outputs);
    let op_vtable = op - i32::from_le_bytes(asm.bytes[op..op + 4].try_into().unwrap()) as usize;
    NetSkeleton {
        asm,
        op_vtable,
        op_main: op + 4,
    }
}

fn malformed_detail(result: Result<Model, FormatError>, origin: &str) -> String {
    match result {
        Err(FormatError::Malformed {
            origin: named,
            detail,
        }) => {
            assert_eq!(named, origin, "the error must name the file");
            detail
        }
        Err(other) => panic!("expected a malformed-model error, got {other}"),
        Ok(_) => panic!("malformed input was accepted"),
    }
}

#[test]
fn assembler_output_is_a_valid_model() {
    // Guards the other tests: the skeleton itself must load, so each failure below is caused
    // by the one thing that test breaks. Tag 51 = Relu, its table is empty apart from the vtable.
    let mut net = net_with_one_op(51);
    let relu = net.asm.table(4, &[]);
    net.asm.refer(net.op_main, relu);
    let model = Model::from_bytes(&net.asm.bytes, "ok.mnn").unwrap();
    let ops = model.net.oplists.unwrap();
    assert!(matches!(ops[0].main, Some(OpParameter::Relu(_))));
    assert_eq!(ops[0].output_indexes.as_deref(), Some(&[0][..]));
    assert_eq!(model.net.tensor_name.unwrap(), vec!["t".to_string()]);
}

#[test]
fn unknown_union_tag_is_reported() {
    let mut net = net_with_one_op(200);
    let param = net.asm.table(4, &[]);
    net.asm.refer(net.op_main, param);
    let detail = malformed_detail(Model::from_bytes(&net.asm.bytes, "newer.mnn"), "newer.mnn");
    assert!(detail.contains("unknown OpParameter tag 200"), "{detail}");
}

#[test]
fn empty_and_tiny_inputs_are_rejected() {
    let detail = malformed_detail(Model::from_bytes(&[], "empty.mnn"), "empty.mnn");
    assert!(detail.contains("empty"), "{detail}");
    malformed_detail(Model::from_bytes(&[4, 0, 0], "tiny.mnn"), "tiny.mnn");
}

#[test]
fn empty_file_and_directory_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.mnn");
    std::fs::write(&empty, b"").unwrap();
    let message = Model::load(&empty).unwrap_err().to_string();
    assert!(
        message.contains("empty.mnn") && message.contains("empty"),
        "{message}"
    );
    let message = Model::load(dir.path()).unwrap_err().to_string();
    assert!(message.contains("directory"), "{message}");
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    let missing = dir.path().join("missing.mnn");
    let message = Model::load(&missing).unwrap_err().to_string();
    assert!(message.contains("missing.mnn"), "{message}");
}

#[test]
fn every_truncation_is_rejected() {
    let mut net = net_with_one_op(51);
    let relu = net.asm.table(8, &[4]);
    net.asm.refer(net.op_main, relu);
    let bytes = net.asm.bytes;
    assert!(Model::from_bytes(&bytes, "full.mnn").is_ok());
    for len in 0..bytes.len() {
        // The last bytes may be alignment padding only; anything that cuts data must fail.
        if let Ok(model) = Model::from_bytes(&bytes[..len], "cut.mnn") {
            panic!(
                "truncated to {len} of {} bytes but loaded: {model:?}",
                bytes.len()
            );
        }
    }
}

#[test]
fn offsets_and_lengths_out_of_range_are_rejected() {
    let mut net = net_with_one_op(51);
    let relu = net.asm.table(4, &[]);
    net.asm.refer(net.op_main, relu);
    let good = net.asm.bytes.clone();

    let mut root_far = good.clone();
    root_far[0..4].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
    let detail = malformed_detail(Model::from_bytes(&root_far, "root.mnn"), "root.mnn");
    assert!(detail.contains("outside"), "{detail}");

    let mut main_far = good.clone();
    main_far[net.op_main..net.op_main + 4].copy_from_slice(&0x00ff_fff0u32.to_le_bytes());
    let detail = malformed_detail(Model::from_bytes(&main_far, "main.mnn"), "main.mnn");
    assert!(detail.contains("oplists[0]"), "{detail}");

    // A vector claiming four billion elements must be refused before anything is allocated.
    let ops_vector = {
        let root = u32::from_le_bytes(good[0..4].try_into().unwrap()) as usize;
        let field = root + 4;
        field + u32::from_le_bytes(good[field..field + 4].try_into().unwrap()) as usize
    };
    let mut long_vector = good.clone();
    long_vector[ops_vector..ops_vector + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let detail = malformed_detail(Model::from_bytes(&long_vector, "len.mnn"), "len.mnn");
    assert!(detail.contains("past the end"), "{detail}");

    // A vtable offset pointing outside the table.
    let mut bad_vtable = good;
    let vt_op_slot2 = net.op_vtable + 4 + 2 * 2;
    bad_vtable[vt_op_slot2..vt_op_slot2 + 2].copy_from_slice(&200u16.to_le_bytes());
    malformed_detail(Model::from_bytes(&bad_vtable, "vt.mnn"), "vt.mnn");
}

/// Op -> LoopParam -> RegionCommand -> Op -> ... `levels` times (3 tables per level).
fn nested_loops(levels: usize) -> Vec<u8> {
    let mut net = net_with_one_op(92);
    let mut main_field = net.op_main;
    for level in 0..levels {
        let loop_param = net.asm.table(8, &[0, 0, 0, 0, 0, 0, 4]);
        net.asm.refer(main_field, loop_param);
        let commands = net.asm.vector_u32(&[0]);
        net.asm.refer(loop_param + 4, commands);
        let region = net.asm.table(8, &[4]);
        net.asm.refer(commands + 4, region);
        let op = net.asm.table(OP_INLINE, &OP_WITHOUT_OUTPUTS);
        net.asm.refer(region + 4, op);
        if level + 1 < levels {
            net.asm.bytes[op + 12] = 92;
            main_field = op + 4;
        }
    }
    net.asm.bytes
}

#[test]
fn moderately_nested_loops_load() {
    // Net(1) -> Op(2) -> 3 tables per level: 20 levels = depth 62, within MNN's 64.
    let model = Model::from_bytes(&nested_loops(20), "nested.mnn").unwrap();
    let mut op: &Op = &model.net.oplists.as_ref().unwrap()[0];
    let mut levels = 0;
    while let Some(OpParameter::LoopParam(loop_param)) = &op.main {
        levels += 1;
        op = loop_param.commands.as_ref().unwrap()[0]
            .op
            .as_deref()
            .unwrap();
    }
    assert_eq!(levels, 20);
}

#[test]
fn deep_loop_nesting_is_an_error_not_a_stack_overflow() {
    let bytes = nested_loops(50_000);
    let detail = malformed_detail(Model::from_bytes(&bytes, "deep.mnn"), "deep.mnn");
    assert!(detail.contains("nest deeper than 64"), "{detail}");
}

#[test]
fn deep_attribute_recursion_is_an_error() {
    // Extra { attr: [Attribute { func: NamedAttrList { attr: [Attribute { func: ... }] } }] }
    let mut net = net_with_one_op(78);
    let extra = net.asm.table(8, &[0, 0, 0, 4]);
    net.asm.refer(net.op_main, extra);
    let mut attr_field = extra + 4;
    for _ in 0..10_000 {
        let attrs = net.asm.vector_u32(&[0]);
        net.asm.refer(attr_field, attrs);
        let attribute = net.asm.table(8, &[0, 0, 0, 0, 0, 0, 0, 0, 4]);
        net.asm.refer(attrs + 4, attribute);
        let list = net.asm.table(8, &[0, 4]);
        net.asm.refer(attribute + 4, list);
        attr_field = list + 4;
    }
    let detail = malformed_detail(Model::from_bytes(&net.asm.bytes, "attr.mnn"), "attr.mnn");
    assert!(detail.contains("nest deeper"), "{detail}");
}

#[test]
fn shared_offsets_cannot_blow_up_memory() {
    // 200,000 tensor names all pointing at one 64 KiB string: 13 GB if expanded naively.
    let detail = malformed_detail(
        Model::from_bytes(&shared_names(200_000, 64 * 1024), "dag.mnn"),
        "dag.mnn",
    );
    assert!(detail.contains("expands to more than"), "{detail}");
    // Moderate sharing (100 x 1 KiB from a 1.5 KiB buffer) is within the default budget...
    let model = Model::from_bytes(&shared_names(100, 1024), "shared.mnn").unwrap();
    assert_eq!(model.net.tensor_name.unwrap().len(), 100);
    // ...and a tighter budget rejects it: the limit is what decides.
    let strict = Limits {
        expansion_factor: 0,
        ..Limits::default()
    };
    assert!(Model::from_bytes_with_limits(&shared_names(2000, 1024), "s.mnn", strict).is_err());
}

/// A Net whose `tensorName` holds `count` references to one string of `len` bytes.
fn shared_names(count: usize, len: usize) -> Vec<u8> {
    let mut net = net_with_one_op(0);
    let root = u32::from_le_bytes(net.asm.bytes[0..4].try_into().unwrap()) as usize;
    let names = net.asm.vector_u32(&vec![0; count]);
    net.asm.refer(root + 8, names);
    let shared = net.asm.string(&"x".repeat(len));
    for i in 0..count {
        net.asm.refer(names + 4 + 4 * i, shared);
    }
    net.asm.bytes
}

#[test]
fn random_bytes_never_panic() {
    // xorshift64*: deterministic pseudo-random buffers of many sizes and shapes.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut accepted = 0;
    for round in 0..20_000 {
        let len = (next() % 512) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if round % 2 == 0 && len >= 4 {
            // Plausible root offsets reach deeper into the reader than uniform noise does.
            let root = (next() % len as u64) as u32 & !3;
            bytes[0..4].copy_from_slice(&root.to_le_bytes());
        }
        if Model::from_bytes(&bytes, "random.bin").is_ok() {
            accepted += 1;
        }
    }
    // Noise essentially never forms a Net with an op list, tensor names and op outputs.
    assert!(accepted < 10, "{accepted} random buffers were accepted");
}

#[test]
fn planus_written_models_reload() {
    let net = Net {
        oplists: Some(vec![Op {
            output_indexes: Some(vec![0]),
            name: Some("input".into()),
            ..Default::default()
        }]),
        tensor_name: Some(vec!["x".into()]),
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("small.mnn");
    Model::new(net.clone(), "memory").save(&path).unwrap();
    let loaded = Model::load(&path).unwrap();
    assert_eq!(loaded.net, net);
    // Only the model is left in the folder: the temporary file was renamed.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("small.mnn")]);
}
