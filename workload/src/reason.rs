//! Reasons shown to people: a FAILED model's reason in `/models` and `/ready`, the 409
//! and 500 bodies, the log. A reason is one line, whatever produced it: candle attaches a
//! backtrace to its errors when `RUST_BACKTRACE` is set (`Error::bt`), and several of its
//! wrappers put their parts on lines of their own.

use std::path::Path;

use candle_core::Error as CandleError;
use safetensors::SafeTensorError;

/// Longest reason shown; a longer one keeps its start and its end (which says what to do).
pub const MAX_REASON_CHARS: usize = 300;

/// `text` as one line: any backtrace dropped, runs of whitespace (newlines included)
/// collapsed to one space, at most [`MAX_REASON_CHARS`] characters.
pub fn one_line(text: &str) -> String {
    let collapsed = strip_backtrace(text).split_whitespace().collect::<Vec<_>>().join(" ");
    bound(&collapsed, MAX_REASON_CHARS)
}

/// `text` up to the first line that starts a backtrace: a frame as std prints one
/// (`   0: candle_core::error::Error::bt`) or a `stack backtrace:` heading.
fn strip_backtrace(text: &str) -> &str {
    let mut end = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let t = line.trim_start();
        let frame = t.split_once(": ").is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        let heading = t.to_ascii_lowercase().starts_with("stack backtrace:");
        if i > 0 && (frame || heading) {
            return &text[..end];
        }
        end += line.len();
    }
    text
}

/// At most `max` characters: the first two thirds and the last third around " … ".
fn bound(text: &str, max: usize) -> String {
    let chars = text.chars().count();
    if chars <= max {
        return text.to_string();
    }
    const GAP: &str = " … ";
    let keep = max - GAP.chars().count();
    let head = keep * 2 / 3;
    let tail = keep - head;
    let start: String = text.chars().take(head).collect();
    let end: String = text.chars().skip(chars - tail).collect();
    format!("{}{GAP}{}", start.trim_end(), end.trim_start())
}

/// A candle error in words, without the backtrace candle may carry, its parts on one
/// line, and safetensors' and zip's errors said as what is wrong with the file.
pub fn candle(e: &CandleError) -> String {
    match e {
        CandleError::WithBacktrace { inner, .. } => candle(inner),
        CandleError::WithPath { inner, path } => format!("{}: {}", path.display(), candle(inner)),
        CandleError::Context { inner, context } => format!("{context}: {}", candle(inner)),
        // Its own Display prints the wrapped error with {:?}: a bare variant name.
        CandleError::WrappedContext { wrapped, context } => format!("{context}: {wrapped}"),
        CandleError::SafeTensor(e) => safetensors(e),
        CandleError::Zip(e) => format!("not a PyTorch checkpoint (a zip archive), or cut short ({e})"),
        other => one_line(&other.to_string()),
    }
}

/// The file a candle error is about (`Error::with_path`), and the error inside.
pub fn candle_path(e: &CandleError) -> (Option<&Path>, &CandleError) {
    match e {
        CandleError::WithBacktrace { inner, .. } => candle_path(inner),
        CandleError::WithPath { inner, path } => (Some(path), candle_backtrace_free(inner)),
        other => (None, other),
    }
}

fn candle_backtrace_free(e: &CandleError) -> &CandleError {
    match e {
        CandleError::WithBacktrace { inner, .. } => candle_backtrace_free(inner),
        other => other,
    }
}

/// What a safetensors error says about the file, in words (its Display is terse).
pub fn safetensors(e: &SafeTensorError) -> String {
    use SafeTensorError as S;
    match e {
        S::HeaderTooSmall => "too short to be a safetensors file (header too small)".into(),
        S::HeaderTooLarge | S::InvalidHeaderLength => {
            format!("not a safetensors file, or cut short inside its header ({e})")
        }
        S::InvalidHeader(_) | S::InvalidHeaderDeserialization(_) | S::JsonError(_) => {
            format!("its safetensors header is not valid ({e})")
        }
        S::MetadataIncompleteBuffer => {
            "its size does not match its header: truncated, or with bytes its header does not describe".into()
        }
        S::IoError(io) => format!("cannot read it ({io})"),
        other => format!("its safetensors header does not describe its data ({other})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_backtrace(inner: CandleError) -> CandleError {
        let backtrace = Box::new(std::backtrace::Backtrace::force_capture());
        CandleError::WithBacktrace { inner: Box::new(inner), backtrace }
    }

    #[test]
    fn a_backtrace_never_reaches_a_reason() {
        let e = with_backtrace(CandleError::Msg("shape mismatch for w, expected: [2], got: [3]".into()));
        let raw = e.to_string();
        assert!(raw.lines().count() > 2, "the test needs a real backtrace: {raw:?}");
        assert_eq!(candle(&e), "shape mismatch for w, expected: [2], got: [3]");
        assert_eq!(one_line(&raw), "shape mismatch for w, expected: [2], got: [3]");
        let context = with_backtrace(e).context("loading w");
        assert_eq!(candle(&context), "loading w: shape mismatch for w, expected: [2], got: [3]");
        assert_eq!(one_line("stack overflow\nstack backtrace:\n   0: main"), "stack overflow");
        assert_eq!(one_line("a: b\n  c:  d\n"), "a: b c: d");
    }

    #[test]
    fn long_reasons_keep_their_start_and_their_end() {
        let text = format!("start {} end: do this", "x".repeat(1000));
        let short = one_line(&text);
        assert_eq!(short.chars().count(), MAX_REASON_CHARS);
        assert!(short.starts_with("start xxx") && short.ends_with("xxx end: do this"), "{short}");
        assert!(short.contains("x … x"), "{short}");
        let exact = "é".repeat(MAX_REASON_CHARS);
        assert_eq!(one_line(&exact), exact);
    }

    #[test]
    fn safetensors_errors_are_said_in_words_with_the_file() {
        let e = CandleError::from(SafeTensorError::MetadataIncompleteBuffer).with_path("/m/model.safetensors");
        let (path, inner) = candle_path(&e);
        assert_eq!(path, Some(Path::new("/m/model.safetensors")));
        assert!(candle(inner).starts_with("its size does not match its header: truncated"), "{}", candle(inner));
        assert!(candle(&e).starts_with("/m/model.safetensors: its size"), "{}", candle(&e));
        use SafeTensorError as S;
        for e in [S::HeaderTooLarge, S::InvalidHeaderLength, S::HeaderTooSmall] {
            let text = safetensors(&e);
            assert!(text.contains("safetensors file") && text.ends_with(&format!("({e})")), "{text}");
        }
    }
}
