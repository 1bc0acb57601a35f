//! Statistics over calibration runs and the scales computed from them: feature ranges and
//! histograms, KL and ADMM feature scales, MAX_ABS and ADMM per-channel weight scales.
