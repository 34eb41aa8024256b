//! Language codes: NLLB's FLORES-200 codes (`eng_Latn`) are the service's language
//! identifiers; Aya is prompted with the English name of the language.

/// (FLORES-200 code, English name): the 23 languages of aya-23, which NLLB covers too,
/// plus a few NLLB-only ones that show a clean "Aya does not know it" error.
pub const LANGUAGES: &[(&str, &str)] = &[
    ("arb_Arab", "Arabic"),
    ("ces_Latn", "Czech"),
    ("deu_Latn", "German"),
    ("ell_Grek", "Greek"),
    ("eng_Latn", "English"),
    ("fra_Latn", "French"),
    ("heb_Hebr", "Hebrew"),
    ("hin_Deva", "Hindi"),
    ("ind_Latn", "Indonesian"),
    ("ita_Latn", "Italian"),
    ("jpn_Jpan", "Japanese"),
    ("kor_Hang", "Korean"),
    ("nld_Latn", "Dutch"),
    ("pes_Arab", "Persian"),
    ("pol_Latn", "Polish"),
    ("por_Latn", "Portuguese"),
    ("ron_Latn", "Romanian"),
    ("rus_Cyrl", "Russian"),
    ("spa_Latn", "Spanish"),
    ("tur_Latn", "Turkish"),
    ("ukr_Cyrl", "Ukrainian"),
    ("vie_Latn", "Vietnamese"),
    ("zho_Hans", "Chinese (Simplified)"),
    ("zho_Hant", "Chinese (Traditional)"),
];

/// Languages NLLB has and aya-23 does not.
pub const NLLB_ONLY: &[(&str, &str)] = &[
    ("swh_Latn", "Swahili"),
    ("yor_Latn", "Yoruba"),
    ("hau_Latn", "Hausa"),
    ("zul_Latn", "Zulu"),
];

/// Aya's name for a FLORES-200 code, if aya-23 covers that language.
pub fn aya_name(code: &str) -> Option<&'static str> {
    LANGUAGES.iter().find(|(c, _)| *c == code).map(|(_, name)| *name)
}

/// Every code a synthetic NLLB tokenizer carries.
pub fn nllb_codes() -> impl Iterator<Item = &'static str> {
    LANGUAGES.iter().chain(NLLB_ONLY).map(|(code, _)| *code)
}

/// True for strings shaped like a FLORES-200 code: three lowercase letters, `_`, a
/// four-letter script starting uppercase. Used to refuse garbage before lookups.
pub fn looks_like_code(code: &str) -> bool {
    let b = code.as_bytes();
    b.len() == 8
        && b[..3].iter().all(u8::is_ascii_lowercase)
        && b[3] == b'_'
        && b[4].is_ascii_uppercase()
        && b[5..].iter().all(u8::is_ascii_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_code_is_well_formed_and_unique() {
        let codes: Vec<&str> = nllb_codes().collect();
        assert!(codes.iter().all(|c| looks_like_code(c)), "{codes:?}");
        let mut sorted = codes.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), codes.len());
    }

    #[test]
    fn aya_names_cover_its_languages_only() {
        assert_eq!(aya_name("fra_Latn"), Some("French"));
        assert_eq!(aya_name("swh_Latn"), None);
        assert!(!looks_like_code("french"));
        assert!(!looks_like_code("eng_latn"));
    }
}
