//! tokenizer.json for synthetic checkpoints: a byte-level BPE that can encode any text,
//! with the special and language tokens at the places the model config expects, and
//! filler tokens up to the model's vocabulary size so every generated id decodes.

use serde_json::{json, Value};

use crate::checkpoint::Arch;
use crate::languages;

const NLLB_SPECIALS: [&str; 4] = ["<s>", "<pad>", "</s>", "<unk>"];
const AYA_SPECIALS: [&str; 8] =
    ["<PAD>", "<UNK>", "<CLS>", "<SEP>", "<MASK_TOKEN>", "<BOS_TOKEN>", "<EOS_TOKEN>", "<EOP_TOKEN>"];

/// Ids of Cohere's chat-turn tokens in a synthetic vocabulary of `vocab` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnTokens {
    pub start_of_turn: u32,
    pub end_of_turn: u32,
    pub user: u32,
    pub chatbot: u32,
    pub system: u32,
}

/// At the top of the vocabulary, as in aya-23 (255000.. of 256000).
pub fn aya_turn_token_ids(vocab: usize) -> TurnTokens {
    let top = vocab as u32;
    TurnTokens { start_of_turn: top - 5, end_of_turn: top - 4, user: top - 3, chatbot: top - 2, system: top - 1 }
}

fn aya_turn_tokens(vocab: usize) -> [(u32, &'static str); 5] {
    let t = aya_turn_token_ids(vocab);
    [
        (t.start_of_turn, "<|START_OF_TURN_TOKEN|>"),
        (t.end_of_turn, "<|END_OF_TURN_TOKEN|>"),
        (t.user, "<|USER_TOKEN|>"),
        (t.chatbot, "<|CHATBOT_TOKEN|>"),
        (t.system, "<|SYSTEM_TOKEN|>"),
    ]
}

/// The smallest vocabulary that holds the specials, the 256 byte tokens and (NLLB) the
/// language codes.
pub fn min_vocab(arch: Arch) -> usize {
    match arch {
        Arch::Nllb => NLLB_SPECIALS.len() + 256 + languages::nllb_codes().count() + 1,
        Arch::Aya => AYA_SPECIALS.len() + 256 + 5,
    }
}

/// GPT-2's byte-to-character table: printable bytes map to themselves, the rest to
/// code points from 256 up, so every byte is one visible character in the vocabulary.
fn byte_chars() -> Vec<char> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut next = 256;
    (0u32..256)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap_or('?')
            } else {
                let c = char::from_u32(next).unwrap_or('?');
                next += 1;
                c
            }
        })
        .collect()
}

fn added_token(id: u32, content: &str) -> Value {
    json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
           "normalized": false, "special": true})
}

/// The tokenizer.json document for a vocabulary of `vocab` ids.
pub fn tokenizer_json(arch: Arch, vocab: usize) -> Result<Value, String> {
    if vocab < min_vocab(arch) {
        return Err(format!("a {} vocabulary needs at least {} tokens, got {vocab}", arch.name(), min_vocab(arch)));
    }
    let mut tokens: Vec<Option<String>> = vec![None; vocab];
    let mut added = Vec::new();
    let specials: &[&str] = match arch {
        Arch::Nllb => &NLLB_SPECIALS,
        Arch::Aya => &AYA_SPECIALS,
    };
    for (id, s) in specials.iter().enumerate() {
        tokens[id] = Some(s.to_string());
        added.push(added_token(id as u32, s));
    }
    for (i, c) in byte_chars().into_iter().enumerate() {
        tokens[specials.len() + i] = Some(c.to_string());
    }
    match arch {
        Arch::Nllb => {
            // Language codes and <mask> sit at the end, as in NLLB-200 (256001..256205).
            let codes: Vec<&str> = languages::nllb_codes().collect();
            let first = vocab - codes.len() - 1;
            for (i, code) in codes.iter().enumerate() {
                tokens[first + i] = Some(code.to_string());
                added.push(added_token((first + i) as u32, code));
            }
            tokens[vocab - 1] = Some("<mask>".into());
            added.push(added_token((vocab - 1) as u32, "<mask>"));
        }
        Arch::Aya => {
            for (id, s) in aya_turn_tokens(vocab) {
                tokens[id as usize] = Some(s.to_string());
                added.push(added_token(id, s));
            }
        }
    }
    // "Ġ" is the byte-level space: fillers decode as words separated by spaces.
    let vocab_map: serde_json::Map<String, Value> = tokens
        .into_iter()
        .enumerate()
        .map(|(id, t)| (t.unwrap_or_else(|| format!("\u{120}w{id}")), json!(id)))
        .collect();
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": byte_level,
        "post_processor": null,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab_map, "merges": []
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::Tokenizer;

    fn load(arch: Arch, vocab: usize) -> Tokenizer {
        let json = tokenizer_json(arch, vocab).unwrap().to_string();
        json.parse::<Tokenizer>().unwrap()
    }

    #[test]
    fn any_text_round_trips_through_bytes() {
        let t = load(Arch::Nllb, 512);
        let text = "Héllo, wörld! 你好";
        let ids = t.encode(text, false).unwrap().get_ids().to_vec();
        assert!(ids.iter().all(|&id| (4..260).contains(&id)), "{ids:?}");
        assert_eq!(t.decode(&ids, true).unwrap(), text);
        assert_eq!(t.get_vocab_size(true), 512);
    }

    #[test]
    fn nllb_language_codes_are_single_tokens_at_the_end() {
        let t = load(Arch::Nllb, 600);
        let codes = languages::nllb_codes().count();
        assert_eq!(t.token_to_id("eng_Latn"), Some((600 - codes - 1) as u32 + 4));
        assert_eq!(t.token_to_id("</s>"), Some(2));
        assert_eq!(t.token_to_id("<mask>"), Some(599));
        let ids = t.encode("fra_Latn hi", false).unwrap().get_ids().to_vec();
        assert_eq!(ids[0], t.token_to_id("fra_Latn").unwrap());
    }

    #[test]
    fn aya_chat_tokens_are_recognised_in_a_prompt() {
        let t = load(Arch::Aya, 512);
        let turns = aya_turn_token_ids(512);
        let ids = t.encode("<BOS_TOKEN><|START_OF_TURN_TOKEN|><|USER_TOKEN|>hi<|END_OF_TURN_TOKEN|>", false).unwrap();
        let ids = ids.get_ids();
        assert_eq!(&ids[..3], &[5, turns.start_of_turn, turns.user]);
        assert_eq!(*ids.last().unwrap(), turns.end_of_turn);
    }

    #[test]
    fn filler_ids_decode_to_words() {
        let t = load(Arch::Aya, 400);
        assert_eq!(t.decode(&[300, 301], true).unwrap(), " w300 w301");
    }

    #[test]
    fn too_small_a_vocabulary_is_refused() {
        assert!(tokenizer_json(Arch::Nllb, 100).unwrap_err().contains("at least"));
    }
}
