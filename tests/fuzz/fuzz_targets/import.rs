//! Arbitrary bytes as a filing file for `import` (`domain::import::parse_file`: one JSON object,
//! an array of them, or JSON Lines). The importer reads text: invalid UTF-8 is refused before it
//! (`commands::import` reads with `read_to_string`), so only UTF-8 input goes further.
//!
//! Besides "never panics", checks what a fuzzer can falsify:
//! - an error names the file and a field (`(document)` when the whole text is at fault);
//! - filings that parse, written back as a JSON array, parse to the same filings.
#![no_main]

use std::path::Path;

use beian_gateway::domain::import::parse_file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_file(Path::new("fuzz.json"), text) {
        Ok(filings) => {
            let json = serde_json::to_string(&filings).expect("filings serialize");
            match parse_file(Path::new("again.json"), &json) {
                Ok(again) => assert_eq!(again, filings, "written back as {json}"),
                Err(e) => panic!("filings written back as {json} do not parse: {e}"),
            }
        }
        Err(e) => {
            assert!(e.to_string().starts_with("fuzz.json: "), "{e}");
            assert!(!e.field.is_empty(), "no field named: {e}");
            assert!(!e.filing.is_empty(), "no filing named: {e}");
        }
    }
});
