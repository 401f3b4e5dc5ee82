//! What messages and logs may say: an error and its causes as one line, each cause said once (many errors,
//! sqlx's, thiserror's with `{source}` in their message, already repeat their source in their own text, which a
//! plain walk down the chain would say again), and URLs without their passwords.

use std::error::Error;

/// `error: cause: cause…`, leaving out a cause whose text the line already holds.
pub fn one_line<'a>(chain: impl IntoIterator<Item = &'a (dyn Error + 'static)>) -> String {
    let mut line = String::new();
    for error in chain {
        let text = error.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// The chain of `error` and its sources.
pub fn chain<'a>(
    error: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(error), |e: &&(dyn Error + 'static)| (*e).source())
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("migrations: {0}")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("table jobs already exists")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot start")]
    struct Plain(#[source] Inner);

    #[test]
    fn each_cause_is_said_once() {
        assert_eq!(
            one_line(chain(&Outer(Inner))),
            "migrations: table jobs already exists"
        );
        assert_eq!(
            one_line(chain(&Plain(Inner))),
            "cannot start: table jobs already exists"
        );
    }
}
