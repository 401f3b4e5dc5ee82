//! The job engine of the Kinto signing service: a job store, the signing pipeline and a pool of workers.

pub mod canonical;
pub mod config;
pub mod job;
pub mod kinto;
pub mod pipeline;
pub mod signing;
