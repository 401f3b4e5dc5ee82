//! The vocabulary every part of the signing service shares, and nothing else: which collections are signed
//! where (`resources`), what a job is (`job`), who a caller is (`principals`), and how settings spell a list
//! (`words`). Pure types: no I/O, no settings loader, no crypto.

pub mod job;
pub mod principals;
pub mod resources;
pub mod words;

pub use principals::Principals;
pub use resources::{check_id, CollectionRef, Resource, ResourceError, Resources, MAX_ID_LENGTH};
