//! The wasm API as JavaScript sees it, in headless Chromium.
#![cfg(wasm_browser)]

use wasm_bindgen::JsValue;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

const ID: &str = "lbZ5kCDHh70DHmBhVwYNt6LeFV5_c33Af86o-T2pbn8";
const KEY: &str = "ERERERERERERERERERERERERERERERERERERERERERE";

#[wasm_bindgen_test]
fn links_in_every_form_give_their_manifest_id() {
    for link in [
        format!("shardweb:{ID}.{KEY}"),
        format!("http://127.0.0.1:8080/#{ID}.{KEY}"),
        format!("{ID}.{KEY}"),
    ] {
        assert_eq!(shardweb_wasm::manifest_id_of_link(&link).unwrap(), ID);
    }
}

#[wasm_bindgen_test]
fn a_malformed_link_rejects_with_a_js_error_that_hides_the_key() {
    let err = shardweb_wasm::manifest_id_of_link(&format!("{ID}.{}", &KEY[..40])).unwrap_err();
    let err = js_sys::Error::from(JsValue::from(err));
    let message = String::from(err.message());
    assert_eq!(message, "the link's key is 30 bytes, expected 32");
    assert!(!message.contains(&KEY[..40]));
    assert_eq!(shardweb_wasm::version(), env!("CARGO_PKG_VERSION"));
}
