//! Helpers shared by the vector tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// Section `heading` of docs/wire.md (up to the next `## `), after checking that every long hex string it quotes
/// (16 digits or more, any case) is in the vector file `vectors`, and that it quotes at least `at_least` of them:
/// the document cannot drift from the file. Returns the section with its whitespace removed, so that a value
/// printed over several lines is one substring.
pub fn section_quoting_vectors(heading: &str, vectors: &str, at_least: usize) -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/wire.md"))
        .unwrap();
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("wire.md has no `{heading}`"));
    let section = &doc[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut checked = 0;
    for word in section.split(|c: char| !c.is_ascii_alphanumeric()) {
        if word.len() >= 16 && word.chars().all(|c| c.is_ascii_hexdigit()) {
            assert!(
                vectors.contains(&word.to_ascii_lowercase()),
                "wire.md `{heading}` quotes {word}, which is not in the vectors"
            );
            checked += 1;
        }
    }
    assert!(
        checked >= at_least,
        "only {checked} hex strings in wire.md `{heading}`"
    );
    section.split_whitespace().collect()
}
