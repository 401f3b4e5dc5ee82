//! How a setting spells a list of words: a TOML list, or one string of words separated by spaces (how Kinto's
//! ini settings and environment variables spell one).

use serde::{Deserialize, Deserializer};

/// `deserialize_with` for a list of words.
pub fn word_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Words {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Words::deserialize(d)? {
        Words::One(s) => s.split_whitespace().map(str::to_owned).collect(),
        Words::Many(v) => v,
    })
}
