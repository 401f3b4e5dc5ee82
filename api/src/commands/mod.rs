//! One module per subcommand; each returns the process exit code.

pub mod keygen;
pub mod serve;
pub mod sign;
pub mod verify;
