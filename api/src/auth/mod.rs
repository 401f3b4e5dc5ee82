//! Who may call the API. One module per scheme.

pub mod webhook_hmac;
