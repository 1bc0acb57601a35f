//! A graph view over a loaded model: tensors by index, the producer and consumers of each tensor,
//! graph inputs and outputs.
