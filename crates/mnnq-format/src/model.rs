//! Loading and saving whole models.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use planus::ReadAsRoot;

use crate::error::FormatError;
use crate::generated::mnn::{Net, NetRef, Op, OpParameter};
use crate::verify::{self, Limits};

/// Suffix MNN appends to the model path to find external weights (`model.mnn.weight`).
pub const SIDECAR_SUFFIX: &str = ".weight";

/// FlatBuffers offsets are signed 32-bit in MNN's verifier: buffers must stay below 2 GiB.
const MAX_BUFFER_BYTES: usize = i32::MAX as usize;

/// The contents of an external weight file (`<model>.weight`), which `external` fields point into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalData {
    /// Where the bytes were read from (used in messages).
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

/// A loaded `.mnn` model: the whole `Net` as owned values, plus its external weights if any op
/// refers to them.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub net: Net,
    /// The file name or description used in error messages.
    pub origin: String,
    /// The sidecar, loaded by [`Model::load`] when some op has an `external` field or `externalPath`.
    pub external: Option<ExternalData>,
}

impl Model {
    /// Wraps a `Net` built in memory.
    pub fn new(net: Net, origin: impl Into<String>) -> Self {
        Model {
            net,
            origin: origin.into(),
            external: None,
        }
    }

    /// Reads a model file and, when the model refers to external weights, `<path>.weight`.
    pub fn load(path: impl AsRef<Path>) -> Result<Model, FormatError> {
        let path = path.as_ref();
        let bytes = read_file(path, "read the model")?;
        let mut model = Model::from_bytes(&bytes, &path.display().to_string())?;
        if refers_to_external_data(&model.net) {
            let sidecar = sidecar_path(path);
            let bytes = fs::read(&sidecar).map_err(|source| FormatError::External {
                origin: model.origin.clone(),
                detail: format!(
                    "the model refers to external weights but {} cannot be read: {source}",
                    sidecar.display()
                ),
            })?;
            model.external = Some(ExternalData {
                path: sidecar,
                bytes,
            });
        }
        Ok(model)
    }

    /// Decodes a model from memory. `origin` names the source in error messages. External
    /// weights are not loaded (set [`Model::external`] yourself if needed).
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Model, FormatError> {
        Model::from_bytes_with_limits(bytes, origin, Limits::default())
    }

    /// Like [`Model::from_bytes`] with explicit resource limits.
    pub fn from_bytes_with_limits(
        bytes: &[u8],
        origin: &str,
        limits: Limits,
    ) -> Result<Model, FormatError> {
        if bytes.is_empty() {
            return Err(FormatError::malformed(origin, "the file is empty"));
        }
        if bytes.len() < 8 {
            return Err(FormatError::malformed(
                origin,
                format!("{} bytes is too short for a FlatBuffer", bytes.len()),
            ));
        }
        if bytes.len() > MAX_BUFFER_BYTES {
            return Err(FormatError::malformed(
                origin,
                "the buffer is 2 GiB or larger (MNN stores such models with external weights)",
            ));
        }
        // Bound depth and total size before planus recursively builds owned values.
        verify::check(bytes, limits).map_err(|e| FormatError::malformed(origin, e.to_string()))?;
        let net_ref = NetRef::read_as_root(bytes)
            .map_err(|e| FormatError::malformed(origin, e.to_string()))?;
        let net =
            Net::try_from(net_ref).map_err(|e| FormatError::malformed(origin, e.to_string()))?;
        check_net(&net).map_err(|detail| FormatError::malformed(origin, detail))?;
        Ok(Model {
            net,
            origin: origin.to_string(),
            external: None,
        })
    }

    /// Serializes the `Net` into one FlatBuffer (root `Net`, no file identifier), as MNN reads it.
    pub fn to_bytes(&self) -> Result<Vec<u8>, FormatError> {
        let mut builder = planus::Builder::new();
        let bytes = builder.finish(&self.net, None).to_vec();
        if bytes.len() > MAX_BUFFER_BYTES {
            return Err(FormatError::Write {
                origin: self.origin.clone(),
                detail: format!(
                    "the serialized model is {} bytes, MNN cannot read buffers of 2 GiB or more",
                    bytes.len()
                ),
            });
        }
        Ok(bytes)
    }

    /// Writes the model to `path` atomically: a temporary file in the same folder is written,
    /// flushed and renamed, so a failure never leaves a partial model. When the model carries
    /// external weights they are written the same way to `<path>.weight` first.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), FormatError> {
        let path = path.as_ref();
        let bytes = self.to_bytes()?;
        if let Some(external) = &self.external {
            write_atomically(&sidecar_path(path), &external.bytes)?;
        }
        write_atomically(path, &bytes)
    }

    /// Bytes of the external weight file, if loaded.
    pub fn external_bytes(&self) -> Option<&[u8]> {
        self.external.as_ref().map(|e| e.bytes.as_slice())
    }
}

/// `<model path>.weight`, where MNN looks for external weights by default.
pub fn sidecar_path(model_path: &Path) -> PathBuf {
    let mut name = model_path.as_os_str().to_owned();
    name.push(SIDECAR_SUFFIX);
    PathBuf::from(name)
}

fn read_file(path: &Path, action: &'static str) -> Result<Vec<u8>, FormatError> {
    let io_error = |source| FormatError::Io {
        path: path.to_path_buf(),
        action,
        source,
    };
    let metadata = fs::metadata(path).map_err(io_error)?;
    if metadata.is_dir() {
        return Err(FormatError::malformed(
            &path.display().to_string(),
            "this is a directory, not a model file",
        ));
    }
    fs::read(path).map_err(io_error)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), FormatError> {
    let io_error = |action: &'static str| {
        move |source| FormatError::Io {
            path: path.to_path_buf(),
            action,
            source,
        }
    };
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".mnnq-")
        .suffix(".tmp")
        .tempfile_in(&folder)
        .map_err(io_error("create a temporary file next to"))?;
    temp.write_all(bytes).map_err(io_error("write"))?;
    temp.as_file().sync_all().map_err(io_error("flush"))?;
    temp.persist(path)
        .map_err(|e| io_error("rename the temporary file to")(e.error))?;
    Ok(())
}

/// The checks MNN's loader makes after verification: an op list, tensor names, and outputs on
/// every op.
fn check_net(net: &Net) -> Result<(), String> {
    let ops = net.oplists.as_ref().ok_or("the Net has no op list")?;
    if net.tensor_name.is_none() {
        return Err("the Net has no tensor names".to_string());
    }
    for (position, op) in ops.iter().enumerate() {
        if op.output_indexes.is_none() {
            return Err(format!(
                "op #{position} ({}) has no output indexes",
                op.name.as_deref().unwrap_or("unnamed")
            ));
        }
    }
    Ok(())
}

/// Whether any op (including subgraph and loop bodies) stores data in the external sidecar.
pub fn refers_to_external_data(net: &Net) -> bool {
    let top = net.oplists.iter().flatten();
    let sub = net
        .subgraphs
        .iter()
        .flatten()
        .flat_map(|graph| graph.nodes.iter().flatten());
    let describes = net.extra_tensor_describe.iter().flatten();
    top.chain(sub).any(op_refers_to_external_data)
        || describes
            .filter_map(|d| d.blob.as_deref())
            .any(|blob| has_entries(&blob.external))
}

fn has_entries<T>(field: &Option<Vec<T>>) -> bool {
    field.as_ref().is_some_and(|v| !v.is_empty())
}

fn op_refers_to_external_data(op: &Op) -> bool {
    if op.external_path.is_some() {
        return true;
    }
    match &op.main {
        Some(OpParameter::Convolution2D(conv)) => has_entries(&conv.external),
        Some(OpParameter::Convolution3D(conv)) => has_entries(&conv.external),
        Some(OpParameter::Blob(blob)) => has_entries(&blob.external),
        Some(OpParameter::Scale(scale)) => has_entries(&scale.external),
        Some(OpParameter::LayerNorm(norm)) => has_entries(&norm.external),
        Some(OpParameter::GroupNorm(norm)) => has_entries(&norm.external),
        Some(OpParameter::FusedLinearParam(fused)) => fused
            .convs
            .iter()
            .flatten()
            .any(|c| has_entries(&c.external)),
        Some(OpParameter::LoopParam(loop_param)) => loop_param
            .commands
            .iter()
            .flatten()
            .chain(loop_param.init_command.iter().flatten())
            .filter_map(|command| command.op.as_deref())
            .any(op_refers_to_external_data),
        _ => false,
    }
}
