//! One module per subcommand. Each parses its own arguments and calls into the library crates.

pub mod bench;
pub mod compare;
pub mod inspect;
pub mod preprocess;
pub mod quantize;
pub mod rewrite;
pub mod run;
