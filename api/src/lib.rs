//! The HTTP API of the Kinto signing service: takes signing requests (direct or Kinto webhook), records them as
//! jobs, answers their status.

mod answers;
mod body;
pub mod error;
mod prefer;
mod routes;
pub mod server;
pub mod settings;
pub mod state;
pub mod tls;

pub use routes::router;
pub use state::AppState;
