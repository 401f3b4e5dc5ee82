//! The end-to-end tests, one module per concern, in one test binary: one link instead of twenty, and one
//! place to read what is covered. They start real Kinto, Postgres-backed and embedded stores, RabbitMQ and the
//! two service binaries (`target/debug/signer-api`, `signer-worker`); one module runs with
//! `cargo nextest run -E 'test(/^workflow::/)'`.

mod api_errors;
mod auth;
mod autograph_faults;
mod canonical_reference;
mod chaos;
mod claim_ahead;
mod demo;
mod deploy_files;
mod failures;
mod feed;
mod kinto_plugin;
mod layout;
mod metrics;
mod openapi;
mod rabbitmq;
mod signing;
mod startup;
mod store_conformance;
mod verify_reference;
mod verify_x5u;
mod workflow;
