//! Which tab runs a transfer. Tabs of one origin share the IndexedDB store but not their
//! memory: a transfer running in one tab is, to another, only a record. A Web Lock named after
//! the transfer is held while it runs, so that no tab cancels or resumes what another runs
//! (cancelling removes the shards the transfer added, under the feet of the tab writing them).
//! Where a browser has no Web Locks, each tab knows only its own transfers, as before.

use futures::channel::oneshot;
use futures::future::Either;
use js_sys::{Function, Object, Promise, Reflect};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::AbortSignal;

/// A transfer's lock, held until this is dropped (or [`Held::release`]d).
#[derive(Debug)]
pub struct Held {
    _release: Option<oneshot::Sender<()>>,
    /// The browser's request, settled once the lock is freed.
    freed: Option<Promise>,
}

impl Held {
    /// A lock that guards nothing, where the browser has no Web Locks.
    fn unguarded() -> Self {
        Self { _release: None, freed: None }
    }

    /// Lets the lock go, and waits until the browser has freed it for the next to take.
    pub async fn release(mut self) {
        drop(self._release.take());
        if let Some(freed) = self.freed.take() {
            let _ = JsFuture::from(freed).await;
        }
    }
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
    let options = Object::new();
    let _ = Reflect::set(&options, &"ifAvailable".into(), &JsValue::TRUE);
    request(id, options).await
}

/// [`hold`], waiting up to `within` for the tab holding the lock to let it go.
pub async fn hold_within(id: &str, within: std::time::Duration) -> Option<Held> {
    let options = Object::new();
    let ms = u32::try_from(within.as_millis()).unwrap_or(u32::MAX);
    let _ = Reflect::set(&options, &"signal".into(), &AbortSignal::timeout_with_u32(ms));
    request(id, options).await
}

async fn request(id: &str, options: Object) -> Option<Held> {
    let Some((locks, request)) = locks() else {
        return Some(Held::unguarded());
    };
    let (granted, got) = oneshot::channel::<bool>();
    let (release, released) = oneshot::channel::<()>();
    // Called with the lock, or with null when another holder has it (`ifAvailable`); the
    // lock is held until the promise it returns settles, which is when `Held` is dropped.
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
    let args = js_sys::Array::of3(&name(id).into(), &options, &callback);
    let Ok(freed) = Reflect::apply(&request, &locks, &args).and_then(|p| p.dyn_into::<Promise>())
    else {
        return Some(Held::unguarded());
    };
    // A wait that times out rejects the request without calling back.
    let refused = JsFuture::from(freed.clone());
    match futures::future::select(got, refused).await {
        Either::Left((Ok(true), _)) => Some(Held { _release: Some(release), freed: Some(freed) }),
        Either::Left((Ok(false), _)) | Either::Right((Err(_), _)) => None,
        // The browser never called back: it does not guard this.
        Either::Left((Err(_), _)) | Either::Right((Ok(_), _)) => Some(Held::unguarded()),
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

    /// A wait for a lock ends with it once its holder releases it, or empty after its time.
    #[wasm_bindgen_test]
    async fn a_lock_is_waited_for_within_a_time() {
        use std::time::Duration;
        let id = format!("down-test-{}", js_sys::Math::random());
        let first = hold(&id).await.expect("a free lock is taken");
        assert!(hold_within(&id, Duration::from_millis(100)).await.is_none());
        wasm_bindgen_futures::spawn_local(async move {
            futures_timer::Delay::new(Duration::from_millis(100)).await;
            first.release().await;
        });
        let second = hold_within(&id, Duration::from_secs(5)).await;
        assert!(second.is_some_and(|held| held._release.is_some()), "the released lock is taken");
    }
}
