//! The executor: static shape inference, memory planning and op execution for float and int8
//! models. Hot loops live in `mnnq-kernels`; this crate decides what runs where.
