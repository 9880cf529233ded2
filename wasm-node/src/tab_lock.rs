//! Which tab runs a transfer. Tabs of one origin share the IndexedDB store but not their
//! memory: a transfer running in one tab is, to another, only a record. A Web Lock named after
//! the transfer is held while it runs, so that no tab cancels or resumes what another runs
//! (cancelling removes the shards the transfer added, under the feet of the tab writing them).
//! Where a browser has no Web Locks, each tab knows only its own transfers, as before.

use futures::channel::oneshot;
use js_sys::{Function, Object, Promise, Reflect};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};

/// A transfer's lock, held until this is dropped.
#[derive(Debug)]
pub struct Held {
    _release: Option<oneshot::Sender<()>>,
}

/// The prefix of the locks' names (a namespace of this node's own).
const PREFIX: &str = "shardweb-transfer:";

/// The lock's name for transfer `id`.
fn name(id: &str) -> String {
    format!("{PREFIX}{id}")
}

/// `navigator.locks` in this scope, if the browser has it.
fn locks() -> Option<(Object, Function)> {
    let navigator = Reflect::get(&js_sys::global(), &"navigator".into()).ok()?;
    let locks = Reflect::get(&navigator, &"locks".into()).ok()?.dyn_into::<Object>().ok()?;
    let request = Reflect::get(&locks, &"request".into()).ok()?.dyn_into::<Function>().ok()?;
    Some((locks, request))
}

/// Takes the lock of transfer `id` if no tab holds it: `None` when another does (or this tab
/// already does). Without Web Locks, a lock that guards nothing.
pub async fn hold(id: &str) -> Option<Held> {
    let Some((locks, request)) = locks() else {
        return Some(Held { _release: None });
    };
    let (granted, got) = oneshot::channel::<bool>();
    let (release, released) = oneshot::channel::<()>();
    // Called with the lock, or with null when another holder has it; the lock is held until
    // the promise it returns settles, which is when `Held` is dropped.
    let callback = Closure::once_into_js(move |lock: JsValue| -> Promise {
        let taken = !lock.is_null();
        let _ = granted.send(taken);
        if !taken {
            return Promise::resolve(&JsValue::UNDEFINED);
        }
        wasm_bindgen_futures::future_to_promise(async move {
            let _ = released.await;
            Ok(JsValue::UNDEFINED)
        })
    });
    let options = Object::new();
    let _ = Reflect::set(&options, &"ifAvailable".into(), &JsValue::TRUE);
    let args = js_sys::Array::of3(&name(id).into(), &options, &callback);
    if Reflect::apply(&request, &locks, &args).is_err() {
        return Some(Held { _release: None });
    }
    match got.await {
        Ok(true) => Some(Held { _release: Some(release) }),
        Ok(false) => None,
        // The browser never called back: it does not guard this.
        Err(_) => Some(Held { _release: None }),
    }
}

/// The transfers whose lock some tab holds now (this one's among them), without taking any:
/// empty without Web Locks.
pub async fn running() -> std::collections::HashSet<String> {
    let mut ids = std::collections::HashSet::new();
    let Some((locks, _)) = locks() else { return ids };
    let Some(query) =
        Reflect::get(&locks, &"query".into()).ok().and_then(|q| q.dyn_into::<Function>().ok())
    else {
        return ids;
    };
    let Ok(promise) = query.call0(&locks).and_then(|p| p.dyn_into::<Promise>()) else {
        return ids;
    };
    let Ok(state) = wasm_bindgen_futures::JsFuture::from(promise).await else { return ids };
    let held = Reflect::get(&state, &"held".into()).unwrap_or(JsValue::UNDEFINED);
    for lock in js_sys::Array::from(&held).iter() {
        let name = Reflect::get(&lock, &"name".into()).ok().and_then(|n| n.as_string());
        if let Some(id) = name.as_deref().and_then(|n| n.strip_prefix(PREFIX)) {
            ids.insert(id.to_owned());
        }
    }
    ids
}

#[cfg(all(test, wasm_browser))]
mod tests {
    use wasm_bindgen_test::wasm_bindgen_test;

    use super::*;

    /// A lock is held once: a second try fails while the first holds it and succeeds after.
    #[wasm_bindgen_test]
    async fn a_transfer_is_held_once_at_a_time() {
        let id = format!("up-test-{}", js_sys::Math::random());
        let first = hold(&id).await.expect("a free lock is taken");
        assert!(first._release.is_some(), "this browser has Web Locks");
        assert!(hold(&id).await.is_none(), "a held lock is taken twice");
        assert!(running().await.contains(&id));
        drop(first);
        // The release settles the lock's promise; the browser frees it soon after.
        let mut again = None;
        for _ in 0..50 {
            again = hold(&id).await;
            if again.is_some() {
                break;
            }
            futures_timer::Delay::new(std::time::Duration::from_millis(10)).await;
        }
        assert!(again.is_some(), "the lock was not freed");
    }
}
