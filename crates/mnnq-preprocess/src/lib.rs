//! Calibration inputs: the `quantized.out` config file, the calibration file list, image decoding
//! and preprocessing exactly as MNN's tool does them.
