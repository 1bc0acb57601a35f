//! Writing float32 tensors as `.npy` atomically (temporary file in the same folder, then
//! rename), so a failed or interrupted write never leaves a truncated file under the final name.

use std::path::{Path, PathBuf};

use npyz::WriterBuilder;

/// Writes `data` (C order, `shape`) as a little-endian float32 `.npy` file at `path`.
pub fn write_npy_f32(path: &Path, shape: &[usize], data: &[f32]) -> std::io::Result<()> {
    let expected: usize = shape.iter().product();
    if expected != data.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "shape {shape:?} needs {expected} values, got {}",
                data.len()
            ),
        ));
    }
    let temporary = temporary_path(path);
    let result = (|| {
        let file = std::fs::File::create(&temporary)?;
        let mut buffered = std::io::BufWriter::new(file);
        let dims: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        let mut writer = npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .shape(&dims)
            .writer(&mut buffered)
            .begin_nd()?;
        writer.extend(data.iter().copied())?;
        writer.finish()?;
        let file = buffered.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

fn temporary_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_npyz() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.npy");
        let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
        write_npy_f32(&path, &[1, 2, 3, 4], &data).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
        assert_eq!(npy.shape(), &[1, 2, 3, 4]);
        assert_eq!(npy.into_vec::<f32>().unwrap(), data);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn refuses_a_shape_that_does_not_fit_the_data() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_npy_f32(&dir.path().join("t.npy"), &[2, 2], &[1.0]).is_err());
    }
}
