//! The job engine of the Kinto signing service: a job store, the signing pipeline and a pool of workers.

pub mod acl;
pub mod allocator;
pub mod canonical;
pub mod clock;
pub mod config;
pub mod dispatch;
pub mod error_text;
pub mod feed;
pub mod health;
pub mod kinto;
pub mod metrics;
pub mod pipeline;
pub mod pool;
pub mod report;
pub mod service;
pub mod signing;
pub mod store;
pub mod verifier;
