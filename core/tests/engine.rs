//! The upload and download engines over an in-memory network of holders with faults: a holder
//! that is gone, one that is full, one that serves corrupt bytes. Run natively and in Chromium.

#[path = "support/rng.rs"]
mod rng;

#[cfg(wasm_browser)]
use wasm_bindgen_test::wasm_bindgen_test as test;
#[cfg(wasm_browser)]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use futures::executor::block_on;
use rng::Rng;
use shardweb_core::codec::{self, Encoder, FileId, FileKey, Params, ShardId};
use shardweb_core::node::{
    Download, DownloadError, Fetched, Network, NetworkError, Upload, fetch_manifest,
};
use shardweb_core::protocol::{ManifestOutcome, PutOutcome, ShardStatus};
use shardweb_core::{FileMeta, Manifest, ManifestId};

#[derive(Default)]
struct Holder {
    shards: HashMap<ShardId, Bytes>,
    manifests: HashMap<ManifestId, Bytes>,
    gone: bool,
    capacity: Option<usize>,
    corrupt: bool,
    /// Requests that reached this holder, answered or not.
    asked: usize,
    /// Requests still to fail as if the holder could not be reached.
    fail_next: usize,
    /// Whether its shard requests hang, unanswered and not failed (a peer that stopped
    /// reading, a link that went silent).
    stalled: bool,
    /// How long its shard requests take to be answered, and how many of the next ones do
    /// (all when `None`).
    #[cfg(not(wasm_browser))]
    lag: Option<std::time::Duration>,
    #[cfg(not(wasm_browser))]
    lag_next: Option<usize>,
    /// Its shard requests answered, and how many had been when each arrived.
    #[cfg(not(wasm_browser))]
    answered: usize,
    #[cfg(not(wasm_browser))]
    arrivals: Vec<usize>,
}

/// Holders in one process, shared by every clone.
#[derive(Default, Clone)]
struct Swarm(Rc<RefCell<Vec<Holder>>>);

impl Swarm {
    fn with(n: usize) -> Self {
        Self(Rc::new(RefCell::new((0..n).map(|_| Holder::default()).collect())))
    }

    fn holder<T>(&self, peer: usize, f: impl FnOnce(&mut Holder) -> T) -> Result<T, NetworkError> {
        let mut holders = self.0.borrow_mut();
        let holder = &mut holders[peer];
        holder.asked += 1;
        if holder.fail_next > 0 {
            holder.fail_next -= 1;
            return Err(NetworkError::Unreachable { detail: format!("holder {peer} dropped") });
        }
        if holder.gone {
            return Err(NetworkError::Unreachable { detail: format!("holder {peer} is gone") });
        }
        Ok(f(holder))
    }
}

impl Network for Swarm {
    type Peer = usize;

    async fn put_shards(
        &self,
        peer: &usize,
        shards: Vec<(ShardId, Bytes)>,
    ) -> Result<Vec<PutOutcome>, NetworkError> {
        self.holder(*peer, |h| {
            shards
                .into_iter()
                .map(|(id, bytes)| {
                    if ShardId::of(&bytes) != id {
                        PutOutcome::Mismatch
                    } else if h.capacity.is_some_and(|c| h.shards.len() >= c) {
                        PutOutcome::NoSpace
                    } else {
                        h.shards.insert(id, bytes);
                        PutOutcome::Stored
                    }
                })
                .collect()
        })
    }

    async fn get_shards(
        &self,
        peer: &usize,
        ids: Vec<ShardId>,
    ) -> Result<Vec<Fetched>, NetworkError> {
        let stalled = self.0.borrow()[*peer].stalled;
        if stalled {
            self.0.borrow_mut()[*peer].asked += 1;
            futures::future::pending::<()>().await;
        }
        let statuses = self.holder(*peer, |h| {
            ids.iter()
                .map(|id| match h.shards.get(id) {
                    Some(b) if h.corrupt => {
                        let mut bad = b.to_vec();
                        bad[0] ^= 1;
                        ShardStatus::Found(bad.into())
                    }
                    Some(b) => ShardStatus::Found(b.clone()),
                    None => ShardStatus::Missing,
                })
                .collect()
        })?;
        #[cfg(not(wasm_browser))]
        {
            let lag = {
                let mut holders = self.0.borrow_mut();
                let holder = &mut holders[*peer];
                holder.arrivals.push(holder.answered);
                match &mut holder.lag_next {
                    Some(0) => None,
                    Some(n) => {
                        *n -= 1;
                        holder.lag
                    }
                    None => holder.lag,
                }
            };
            if let Some(lag) = lag {
                futures_timer::Delay::new(lag).await;
            }
            self.0.borrow_mut()[*peer].answered += 1;
        }
        Fetched::check_all(&ids, statuses)
    }

    async fn has_shards(&self, peer: &usize, ids: Vec<ShardId>) -> Result<Vec<bool>, NetworkError> {
        self.holder(*peer, |h| ids.iter().map(|id| h.shards.contains_key(id)).collect())
    }

    async fn put_manifest(
        &self,
        peer: &usize,
        manifest: Bytes,
    ) -> Result<ManifestOutcome, NetworkError> {
        self.holder(*peer, |h| {
            h.manifests.insert(ManifestId::of(&manifest), manifest);
            ManifestOutcome::Stored
        })
    }

    async fn get_manifest(
        &self,
        peer: &usize,
        id: ManifestId,
    ) -> Result<Option<Bytes>, NetworkError> {
        self.holder(*peer, |h| h.manifests.get(&id).cloned())
    }
}

fn put(swarm: &Swarm, holders: Vec<usize>, params: Params, data: &[u8]) -> (ManifestId, FileKey) {
    let key = FileKey::generate().unwrap();
    let mut encoder = Encoder::new(params, &key, FileId::generate().unwrap());
    let mut upload = Upload::new(swarm.clone(), holders).unwrap().with_in_flight(3);
    block_on(async {
        for mut chunk in data.chunks(777) {
            while let Some(stripe) = encoder.push(&mut chunk).unwrap() {
                upload.send(stripe).await.unwrap();
            }
        }
        let (last, encoded) = encoder.finish().unwrap();
        upload.send(last).await.unwrap();
        let meta = FileMeta { name: "f.bin".into(), mime: String::new() };
        let manifest =
            Manifest::create(&encoded, &meta, &key, &SigningKey::from_bytes(&[5; 32])).unwrap();
        upload.finish(&manifest).await.unwrap();
        (manifest.id(), key)
    })
}

fn get(
    swarm: &Swarm,
    holders: Vec<usize>,
    id: ManifestId,
    key: &FileKey,
) -> Result<(Vec<u8>, u64), DownloadError> {
    block_on(async {
        let manifest = fetch_manifest(swarm, &holders, id).await?;
        let mut download = Download::start(swarm.clone(), holders, &manifest, key, 3).await?;
        let mut out = Vec::new();
        while let Some(segment) = download.next_segment().await? {
            out.extend_from_slice(&segment);
        }
        Ok((out, download.corrupt_shards()))
    })
}

fn params(k: usize, m: usize) -> Params {
    Params::new(k, m).unwrap().with_segment_size(1000).unwrap()
}

#[test]
fn round_trip_spreads_shards_over_holders() {
    let data = Rng::new(1).bytes(10_500);
    let swarm = Swarm::with(6);
    let (id, key) = put(&swarm, (0..6).collect(), params(4, 2), &data);
    // Six holders, six shards per stripe: one each.
    for h in swarm.0.borrow().iter() {
        assert_eq!(h.shards.len(), 11, "11 stripes, one shard each");
    }
    assert_eq!(get(&swarm, (0..6).collect(), id, &key).unwrap().0, data);
}

#[test]
fn any_m_holders_may_vanish() {
    let data = Rng::new(2).bytes(5_000);
    for gone in [[0, 1], [2, 5], [4, 3]] {
        let swarm = Swarm::with(6);
        let (id, key) = put(&swarm, (0..6).collect(), params(4, 2), &data);
        for g in gone {
            swarm.0.borrow_mut()[g].gone = true;
        }
        assert_eq!(get(&swarm, (0..6).collect(), id, &key).unwrap().0, data, "gone {gone:?}");
    }
}

#[test]
fn corrupt_holders_are_routed_around() {
    let data = Rng::new(3).bytes(5_000);
    let swarm = Swarm::with(3);
    let (id, key) = put(&swarm, (0..3).collect(), params(2, 2), &data);
    swarm.0.borrow_mut()[0].corrupt = true;
    let (got, corrupt) = get(&swarm, (0..3).collect(), id, &key).unwrap();
    assert_eq!(got, data);
    assert!(corrupt > 0, "the corrupt holder was asked and refused");
}

#[test]
fn full_or_gone_holders_pass_shards_on() {
    let data = Rng::new(4).bytes(3_000);
    let swarm = Swarm::with(3);
    swarm.0.borrow_mut()[0].capacity = Some(1);
    swarm.0.borrow_mut()[1].gone = true;
    let (id, key) = put(&swarm, (0..3).collect(), params(2, 1), &data);
    assert_eq!(swarm.0.borrow()[0].shards.len(), 1);
    assert_eq!(swarm.0.borrow()[2].shards.len(), 3 * 3 - 1, "3 stripes of 3 shards");
    // A holder that could not be reached is not asked again (nor for the manifest).
    assert_eq!(swarm.0.borrow()[1].asked, 1);
    assert_eq!(get(&swarm, vec![0, 2], id, &key).unwrap().0, data);
}

/// A holder that could not be reached once is asked last, not never: when the others refuse,
/// the upload still lands there.
#[test]
fn a_holder_that_failed_once_is_still_asked_when_the_others_are_full() {
    let data = Rng::new(6).bytes(6_000);
    let swarm = Swarm::with(2);
    swarm.0.borrow_mut()[0].fail_next = 1;
    swarm.0.borrow_mut()[1].capacity = Some(4);
    let (id, key) = put(&swarm, vec![0, 1], params(2, 1), &data);
    assert_eq!(swarm.0.borrow()[1].shards.len(), 4);
    assert!(swarm.0.borrow()[0].shards.len() >= 6 * 3 - 4, "the rest went to holder 0");
    assert_eq!(get(&swarm, vec![0, 1], id, &key).unwrap().0, data);
}

/// Retries of 10 ms doubling to 40 ms, given up at `max_failures`: the tests count requests,
/// and need not wait a relay's restart out.
#[cfg(not(wasm_browser))]
fn quick_retries(max_failures: u32) -> shardweb_core::node::Retries {
    use std::time::Duration;
    let (first, max_wait) = (Duration::from_millis(10), Duration::from_millis(40));
    shardweb_core::node::Retries { first, max_wait, max_failures }
}

/// A holder whose requests fail for a while (a relay restarting, a connection dropped) is
/// asked again after a wait, even when it is the only one; one that keeps failing is given
/// up, with the stripe it left short named.
// Natively only: its retries wait on timers, which `block_on` cannot let fire on the
// browser's one thread.
#[cfg(not(wasm_browser))]
#[test]
fn a_holder_that_fails_for_a_while_is_asked_again_and_given_up_when_it_keeps_failing() {
    let data = Rng::new(8).bytes(9_000);
    let swarm = Swarm::with(1);
    let (id, key) = put(&swarm, vec![0], params(2, 1), &data);
    let read = |fail_next: usize, gone: bool| {
        block_on(async {
            let manifest = fetch_manifest(&swarm, &[0], id).await?;
            let download = Download::start(swarm.clone(), vec![0], &manifest, &key, 3).await?;
            let mut download = download.with_retries(quick_retries(6));
            let asked = swarm.0.borrow()[0].asked;
            swarm.0.borrow_mut()[0].fail_next = fail_next;
            swarm.0.borrow_mut()[0].gone = gone;
            let mut out = Vec::new();
            let result = loop {
                match download.next_segment().await {
                    Ok(Some(segment)) => out.extend_from_slice(&segment),
                    Ok(None) => break Ok(out),
                    Err(e) => break Err(e),
                }
            };
            swarm.0.borrow_mut()[0].gone = false;
            Ok::<_, DownloadError>((result, swarm.0.borrow()[0].asked - asked))
        })
        .unwrap()
    };
    // Its first two rounds of requests (one per stripe of the window of three) all fail:
    // each round counts as one failure, and the third round is answered.
    let (got, asked) = read(6, false);
    assert_eq!(got.unwrap(), data);
    assert!(asked > 6, "asked {asked} times");
    // Gone for good: given up after its sixth failure in a row (this test's `max_failures`).
    let (got, asked) = read(0, true);
    match got {
        Err(DownloadError::Codec(codec::Error::NotEnoughShards {
            stripe: 0,
            found: 0,
            needed: 2,
        })) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(asked, 6 * 3, "six rounds of three requests");
}

/// A holder that vanishes mid-download, leaving stripes short, sends the download looking for
/// more holders at once (the DHT, in the clients), not after the failed one's retries: the
/// one found completes the file, and the vanished one is asked again at most once meanwhile.
// Natively only: the vanished holder's retry waits on a timer (see the test above).
#[cfg(not(wasm_browser))]
#[test]
fn a_download_short_of_holders_looks_for_more_at_once_and_completes_from_them() {
    let data = Rng::new(9).bytes(20_000);
    let swarm = Swarm::with(3);
    // Three shards a stripe, one on each holder: any two suffice.
    let (id, key) = put(&swarm, vec![0, 1, 2], params(2, 1), &data);
    let searches = Rc::new(RefCell::new(0));
    let counted = Rc::clone(&searches);
    let (got, asked) = block_on(async {
        let manifest = fetch_manifest(&swarm, &[0, 1], id).await.unwrap();
        let download = Download::start(swarm.clone(), vec![0, 1], &manifest, &key, 2).await;
        let mut download = download.unwrap().with_more_holders(move || {
            *counted.borrow_mut() += 1;
            Box::pin(async { vec![2, 1] })
        });
        assert_eq!(download.unlocated(), None, "holders 0 and 1 hold enough at first");
        let first = download.next_segment().await.unwrap().unwrap();
        swarm.0.borrow_mut()[0].gone = true;
        let asked = swarm.0.borrow()[0].asked;
        let mut out = first;
        while let Some(segment) = download.next_segment().await.unwrap() {
            out.extend_from_slice(&segment);
        }
        (out, swarm.0.borrow()[0].asked - asked)
    });
    assert_eq!(got, data);
    assert_eq!(*searches.borrow(), 1, "one search");
    assert!(asked <= 2 * 3, "the vanished holder was asked {asked} times");
    assert!(swarm.0.borrow()[2].asked > 0, "nothing came from the holder found");
}

/// Runs `run` on this thread; panics with `hang` if it has not ended within a minute. A
/// bound on a hang, not a measure of speed.
#[cfg(not(wasm_browser))]
fn within_a_minute<T>(run: impl std::future::Future<Output = T>, hang: &str) -> T {
    let bound = futures_timer::Delay::new(std::time::Duration::from_secs(60));
    match block_on(futures::future::select(Box::pin(run), bound)) {
        futures::future::Either::Left((got, _)) => got,
        futures::future::Either::Right(_) => panic!("{hang}"),
    }
}

/// A holder found while a vanished one's retries wait is asked at once: the retries queued
/// for what the vanished holder had are called off, not waited out (they may wait seconds,
/// or hang on a dial to a host that is gone).
// Natively only: the retries wait on timers (see above).
#[cfg(not(wasm_browser))]
#[test]
fn a_holder_found_is_asked_at_once_not_after_the_retries_queued_meanwhile() {
    use std::time::Duration;
    let data = Rng::new(12).bytes(20_000);
    let swarm = Swarm::with(3);
    let (id, key) = put(&swarm, vec![0, 1, 2], params(2, 1), &data);
    // Retries that would hold the download for an hour if they were waited out.
    let retries = shardweb_core::node::Retries {
        first: Duration::from_secs(3600),
        max_wait: Duration::from_secs(3600),
        max_failures: 3,
    };
    let download = async {
        let manifest = fetch_manifest(&swarm, &[0, 1], id).await.unwrap();
        let download = Download::start(swarm.clone(), vec![0, 1], &manifest, &key, 2).await;
        let mut download = download
            .unwrap()
            .with_retries(retries)
            .with_more_holders(|| Box::pin(async { vec![2] }));
        let mut out = download.next_segment().await.unwrap().unwrap();
        swarm.0.borrow_mut()[0].gone = true;
        while let Some(segment) = download.next_segment().await.unwrap() {
            out.extend_from_slice(&segment);
        }
        out
    };
    // The download takes milliseconds.
    let got = within_a_minute(download, "the download waited for the retries");
    assert_eq!(got, data);
    assert!(swarm.0.borrow()[2].asked > 1, "nothing came from the holder found");
}

/// A holder whose requests hang, neither answered nor failed, holds no stripe up for long:
/// the stripe waiting on it gets another shard from another holder (a hedge), and the stripes
/// asked after that go to the others first.
// Natively only: the hedge waits on a timer (see above).
#[cfg(not(wasm_browser))]
#[test]
fn a_holder_that_stops_answering_is_hedged_around() {
    let data = Rng::new(13).bytes(20_000);
    let swarm = Swarm::with(3);
    // One shard a stripe on each holder, a data shard on holder 0 in two stripes of three.
    let (id, key) = put(&swarm, vec![0, 1, 2], params(2, 1), &data);
    let window = 3;
    let download = async {
        let manifest = fetch_manifest(&swarm, &[0, 1, 2], id).await.unwrap();
        let download = Download::start(swarm.clone(), vec![0, 1, 2], &manifest, &key, window);
        let mut download = download.await.unwrap();
        swarm.0.borrow_mut()[0].stalled = true;
        let asked = swarm.0.borrow()[0].asked;
        let mut out = Vec::new();
        while let Some(segment) = download.next_segment().await.unwrap() {
            out.extend_from_slice(&segment);
        }
        (out, download.hedged_shards(), swarm.0.borrow()[0].asked - asked)
    };
    let (got, hedged, asked) =
        within_a_minute(download, "the download waited for the stalled holder");
    assert_eq!(got, data);
    // Only stripes of the first window asked it (those it holds a data shard of), and each
    // was hedged; none after.
    assert!((1..=window).contains(&asked), "asked {asked} times");
    assert_eq!(hedged, asked as u64);
}

/// A slow holder that is the only one is not asked for more than the download needs: a hedge
/// asks only other holders, and there are none.
// Natively only: the holder's lag and the hedge wait on timers (see above).
#[cfg(not(wasm_browser))]
#[test]
fn a_slow_holder_that_is_the_only_one_is_not_asked_for_more() {
    use std::time::Duration;
    let data = Rng::new(14).bytes(3_000);
    let swarm = Swarm::with(1);
    let (id, key) = put(&swarm, vec![0], params(2, 1), &data);
    // Slower than the first hedge's wait (2 s, before any request is timed).
    swarm.0.borrow_mut()[0].lag = Some(Duration::from_secs(3));
    let (got, hedged, asked) = block_on(async {
        let manifest = fetch_manifest(&swarm, &[0], id).await.unwrap();
        let mut download =
            Download::start(swarm.clone(), vec![0], &manifest, &key, 3).await.unwrap();
        let asked = swarm.0.borrow()[0].asked;
        let mut out = Vec::new();
        while let Some(segment) = download.next_segment().await.unwrap() {
            out.extend_from_slice(&segment);
        }
        (out, download.hedged_shards(), swarm.0.borrow()[0].asked - asked)
    });
    assert_eq!(got, data);
    // One request for each of the three stripes' two data shards, and no more.
    assert_eq!(asked, 3);
    assert_eq!(hedged, 0);
}

/// A holder hedged around is still asked, at once, for what no other holder can give: a
/// stripe that enters the window while it is slow asks it before its slow replies are in.
// Natively only: the holder's lag and the hedge wait on timers (see above).
#[cfg(not(wasm_browser))]
#[test]
fn a_holder_hedged_around_is_still_asked_for_what_only_it_has() {
    use std::time::Duration;
    let data = Rng::new(15).bytes(4_000);
    let swarm = Swarm::with(2);
    // Holder 0 has every shard; holder 1 the parity shards of the first stripe and the last
    // shard of each other: the first stripe can do without holder 0, the others cannot.
    let (id, key) = put(&swarm, vec![0], params(2, 2), &data);
    let (got, arrivals) = block_on(async {
        let manifest = fetch_manifest(&swarm, &[0], id).await.unwrap();
        let ids = manifest.shard_ids().to_vec();
        let copied = [2, 3].into_iter().chain((1..ids.len() / 4).map(|s| 4 * s + 3));
        for at in copied {
            let shard = swarm.0.borrow()[0].shards[&ids[at]].clone();
            swarm.0.borrow_mut()[1].shards.insert(ids[at], shard);
        }
        // Its requests for the first two stripes (the window) take longer than a hedge's
        // wait; the next are answered at once.
        swarm.0.borrow_mut()[0].lag = Some(Duration::from_secs(3));
        swarm.0.borrow_mut()[0].lag_next = Some(2);
        let download = Download::start(swarm.clone(), vec![0, 1], &manifest, &key, 2).await;
        let mut download = download.unwrap();
        let mut out = Vec::new();
        while let Some(segment) = download.next_segment().await.unwrap() {
            out.extend_from_slice(&segment);
        }
        (out, swarm.0.borrow()[0].arrivals.clone())
    });
    assert_eq!(got, data);
    // The third stripe's request reached it before either slow reply had gone out.
    assert_eq!(arrivals.get(2), Some(&0), "arrivals: {arrivals:?}");
}

/// A holder that says it holds shards and then sends them corrupt leaves stripes short
/// without failing: the download searches for more holders before it gives up.
#[test]
fn a_download_searches_for_more_holders_before_it_gives_up() {
    let data = Rng::new(10).bytes(20_000);
    let swarm = Swarm::with(3);
    let (id, key) = put(&swarm, vec![0, 1, 2], params(2, 1), &data);
    swarm.0.borrow_mut()[0].corrupt = true;
    let searches = Rc::new(RefCell::new(0));
    let counted = Rc::clone(&searches);
    let got = block_on(async {
        let manifest = fetch_manifest(&swarm, &[0, 1], id).await.unwrap();
        let download = Download::start(swarm.clone(), vec![0, 1], &manifest, &key, 2).await;
        let mut download = download.unwrap().with_more_holders(move || {
            *counted.borrow_mut() += 1;
            Box::pin(async { vec![2] })
        });
        let mut out = Vec::new();
        while let Some(segment) = download.next_segment().await.unwrap() {
            out.extend_from_slice(&segment);
        }
        out
    });
    assert_eq!(got, data);
    assert_eq!(*searches.borrow(), 1);
}

/// Searches that find nothing new are not repeated at once: the first comes when a holder
/// vanishes, the second (and last) only once its retries are spent, before giving up.
// Natively only: the retries wait on timers.
#[cfg(not(wasm_browser))]
#[test]
fn a_second_search_waits_until_the_retries_are_spent() {
    let data = Rng::new(11).bytes(20_000);
    let swarm = Swarm::with(2);
    let (id, key) = put(&swarm, vec![0, 1], params(2, 1), &data);
    // When each search came: how often holder 0 had been asked by then.
    let when = Rc::new(RefCell::new(Vec::new()));
    let (seen, watched) = (Rc::clone(&when), swarm.clone());
    let result = block_on(async {
        let manifest = fetch_manifest(&swarm, &[0, 1], id).await.unwrap();
        let download = Download::start(swarm.clone(), vec![0, 1], &manifest, &key, 2).await;
        let retries = quick_retries(5);
        let mut download = download.unwrap().with_retries(retries).with_more_holders(move || {
            seen.borrow_mut().push(watched.0.borrow()[0].asked);
            Box::pin(async { Vec::new() })
        });
        download.next_segment().await.unwrap().unwrap();
        swarm.0.borrow_mut()[0].gone = true;
        let asked = swarm.0.borrow()[0].asked;
        loop {
            match download.next_segment().await {
                Ok(Some(_)) => {}
                other => break (other, asked),
            }
        }
    });
    let (result, asked) = result;
    assert!(
        matches!(result, Err(DownloadError::Codec(codec::Error::NotEnoughShards { .. }))),
        "{result:?}"
    );
    let when = when.borrow();
    assert_eq!(when.len(), 2, "two searches: {when:?}");
    assert!(when[0] - asked <= 2, "the first search came after {} requests", when[0] - asked);
    assert!(when[1] - asked >= 5, "the last search came after {} requests", when[1] - asked);
}

/// A holder given up that a search finds again (a relay back after its restart) is asked again,
/// and completes the download.
// Natively only: the retries wait on timers.
#[cfg(not(wasm_browser))]
#[test]
fn a_holder_given_up_and_found_again_is_asked_again() {
    let data = Rng::new(12).bytes(20_000);
    let swarm = Swarm::with(2);
    let (id, key) = put(&swarm, vec![0, 1], params(2, 1), &data);
    let (back, mut searches) = (swarm.clone(), 0);
    let got = block_on(async {
        let manifest = fetch_manifest(&swarm, &[0, 1], id).await.unwrap();
        let download = Download::start(swarm.clone(), vec![0, 1], &manifest, &key, 2).await;
        let mut download =
            download.unwrap().with_retries(quick_retries(2)).with_more_holders(move || {
                // The first search, when holder 0 vanishes, finds nothing; by the last, before
                // the download would give up, holder 0 is back and found.
                searches += 1;
                let found = if searches == 2 {
                    back.0.borrow_mut()[0].gone = false;
                    vec![0]
                } else {
                    Vec::new()
                };
                Box::pin(async move { found })
            });
        let mut out = download.next_segment().await.unwrap().unwrap();
        swarm.0.borrow_mut()[0].gone = true;
        while let Some(segment) = download.next_segment().await.unwrap() {
            out.extend_from_slice(&segment);
        }
        out
    });
    assert_eq!(got, data);
}

/// A holder whose requests failed is not waited for while the others can give what it had:
/// the stripes it leaves short are completed at once from other shards of theirs.
#[test]
fn a_failed_holder_is_not_waited_for_while_others_can_complete_its_stripes() {
    let data = Rng::new(9).bytes(9_000);
    let swarm = Swarm::with(2);
    let (id, key) = put(&swarm, vec![0, 1], params(2, 2), &data);
    let got = block_on(async {
        let manifest = fetch_manifest(&swarm, &[0, 1], id).await?;
        let mut download = Download::start(swarm.clone(), vec![0, 1], &manifest, &key, 3).await?;
        let asked = swarm.0.borrow()[0].asked;
        swarm.0.borrow_mut()[0].gone = true;
        let mut out = Vec::new();
        while let Some(segment) = download.next_segment().await? {
            out.extend_from_slice(&segment);
        }
        Ok::<_, DownloadError>((out, swarm.0.borrow()[0].asked - asked))
    });
    let (got, asked) = got.unwrap();
    assert_eq!(got, data);
    // Its first requests (one per stripe of the window) failed; none went to it after.
    assert_eq!(asked, 3);
}

#[test]
fn too_few_shards_name_the_stripe() {
    let data = Rng::new(5).bytes(2_500);
    let swarm = Swarm::with(4);
    let (id, key) = put(&swarm, (0..4).collect(), params(2, 2), &data);
    // Drop three of stripe 1's four shards.
    let manifest = block_on(fetch_manifest(&swarm, &[0], id)).unwrap();
    for sid in &manifest.shard_ids()[4..7] {
        swarm.0.borrow_mut().iter_mut().for_each(|h| drop(h.shards.remove(sid)));
    }
    match get(&swarm, (0..4).collect(), id, &key) {
        Err(DownloadError::Codec(codec::Error::NotEnoughShards {
            stripe: 1,
            found: 1,
            needed: 2,
        })) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn wrong_key_and_unknown_manifest_are_typed_errors() {
    let data = Rng::new(6).bytes(100);
    let swarm = Swarm::with(2);
    let (id, _) = put(&swarm, vec![0, 1], params(1, 1), &data);
    let wrong = FileKey::from_bytes([0; 32]);
    assert!(matches!(get(&swarm, vec![0, 1], id, &wrong), Err(DownloadError::Manifest(_))));
    let unknown = ManifestId([1; 32]);
    assert!(matches!(
        get(&swarm, vec![0, 1], unknown, &wrong),
        Err(DownloadError::NotFound { tried: 2, .. })
    ));
    assert!(Upload::new(swarm.clone(), vec![]).is_err());
}
