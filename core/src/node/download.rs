//! The download engine: find which holder has which shard, fetch any k per stripe (data
//! shards first, so most stripes need no decoding), verify, decode and open, with a bounded
//! window of stripes in flight. A shard that is missing, corrupt or whose holder fails is
//! fetched from another holder, or replaced by another shard of its stripe; one whose holder is
//! slow is hedged: another shard of its stripe is asked of another holder.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use futures::future::{AbortHandle, Abortable, Either, LocalBoxFuture, join_all, poll_fn};
use futures::stream::{FuturesUnordered, StreamExt};
use web_time::Instant;

use super::{Fetched, Network, NetworkError};
use crate::codec::{self, Decoder, FileKey, SealedSegment, ShardId, VerifiedShard};
use crate::manifest::{self, Manifest, ManifestId, Opened};
use crate::protocol::MAX_BATCH;

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DownloadError {
    /// No holder had a valid manifest with this id.
    #[error("file not found: none of the {tried} holders has manifest {id}")]
    NotFound { id: ManifestId, tried: usize },
    /// The manifest is bad, or the key is wrong for it.
    #[error(transparent)]
    Manifest(#[from] manifest::Error),
    /// Decoding failed: not enough good shards for a stripe, or a segment did not open.
    #[error(transparent)]
    Codec(#[from] codec::Error),
}

/// Fetches the manifest `id` from the first holder that has a valid one.
pub async fn fetch_manifest<N: Network>(
    net: &N,
    holders: &[N::Peer],
    id: ManifestId,
) -> Result<Manifest, DownloadError> {
    for holder in holders {
        match net.get_manifest(holder, id).await {
            Ok(Some(bytes)) => match Manifest::decode_as(&id, &bytes) {
                Ok(manifest) => return Ok(manifest),
                Err(e) => tracing::warn!(%holder, error = %e, "holder sent a bad manifest"),
            },
            Ok(None) => {}
            Err(e) => tracing::debug!(%holder, error = %e, "manifest request failed"),
        }
    }
    Err(DownloadError::NotFound { id, tried: holders.len() })
}

type Batch = Vec<(u64, usize, ShardId)>;

/// What became of a request for a batch.
struct Reply {
    holder: usize,
    batch: Batch,
    /// The holder's failures in a row when it was asked (see `Download`'s `failures`).
    failures_then: u32,
    /// For a retry (a request to a holder that had failed), its key in `Download`'s
    /// `retrying`.
    retry: Option<u64>,
    /// What the holder sent, and how long it took from the request (its wait left out) to
    /// the reply's being taken; `None` for a retry called off before it answered.
    outcome: Option<(Result<Vec<Fetched>, NetworkError>, Duration)>,
}

/// When a request went out (after its wait, if any), once it has: set by the request itself,
/// so that a download its caller does not poll for a while (a slow reader) does not count
/// that while against the holders.
type SentAt = Rc<Cell<Option<Instant>>>;

/// Per-stripe bookkeeping: which (shard, holder) pairs were tried and which shards are asked.
#[derive(Default)]
struct StripeState {
    tried: HashSet<(usize, usize)>,
    asked: HashSet<usize>,
    /// The shards asked: of which holder, and when the request went out.
    sent: HashMap<usize, (usize, SentAt)>,
    /// Shards the stripe may be asked for past the k it needs, one for each request a holder
    /// was slow to answer (at most n − k), and those requests, as (shard, holder).
    hedges: usize,
    hedged: HashSet<(usize, usize)>,
    /// Holders slow to answer for this stripe: its hedges ask others, and they are asked only
    /// for what no other holder can give.
    slow: HashSet<usize>,
}

/// How long the next stripe's requests may be out before another shard of it is asked of
/// another holder: four times the typical request's time, within these bounds, and the
/// default until a request has been timed.
const HEDGE_FLOOR: Duration = Duration::from_millis(500);
const HEDGE_CEILING: Duration = Duration::from_secs(10);
const HEDGE_DEFAULT: Duration = Duration::from_secs(2);

/// What the next step of a download waits for.
enum Next<P> {
    Reply(Option<Reply>),
    Found(Answers<P>),
    Hedge,
}

/// A download in progress: call [`Download::next_segment`] until it returns `None`; or, to
/// open segments elsewhere, [`Download::next_sealed`].
pub struct Download<N: Network> {
    net: N,
    holders: Vec<N::Peer>,
    /// Holders whose last request failed (or that did not say what they hold): asked only
    /// for what no other holder can give, after a wait, until they fail too often.
    dead: HashSet<usize>,
    /// Failed requests in a row per holder, each counted once however many were in flight
    /// when it failed; a reply resets it. At `retries.max_failures` a holder is given up.
    failures: HashMap<usize, u32>,
    retries: Retries,
    located: HashMap<ShardId, Vec<usize>>,
    ids: Vec<ShardId>,
    decoder: Option<Decoder>,
    opened: Opened,
    stripes: HashMap<u64, StripeState>,
    in_flight: FuturesUnordered<LocalBoxFuture<'static, Reply>>,
    /// Holders whose last replies deferred every shard asked (they are busy), and how many
    /// such replies in a row: the next request to them waits a little, doubling up to a second.
    busy: HashMap<usize, u32>,
    wire_bytes: u64,
    corrupt: u64,
    layout_stripes: u64,
    max_batch: usize,
    /// Finds more holders (the DHT's providers of the file, say): see
    /// [`Download::with_more_holders`].
    find_more: Option<FindMore<N::Peer>>,
    /// The search for more holders under way, which also asks them what they hold: it is kept
    /// here whole, so that dropping a call to [`Download::next_sealed`] loses nothing of it.
    finding: Option<LocalBoxFuture<'static, Answers<N::Peer>>>,
    /// Searches for more holders started.
    searches: u32,
    /// Whether a holder failed since the last look at whether a search is needed: only then
    /// can the holders that answer have come to lack a stripe.
    holder_lost: bool,
    /// The retries in flight, which a holder found can call off (see `call_off_retries`),
    /// with the stripes each asks for shards of, by key; and the next key.
    retrying: HashMap<u64, (AbortHandle, Vec<u64>)>,
    next_retry: u64,
    /// How long requests answered in full took, smoothed (see [`HEDGE_FLOOR`]).
    typical: Option<Duration>,
    /// Shards asked past the k a stripe needs because a holder was slow.
    hedged: u64,
    /// Holders a hedge went around that have not answered since: asked only for what the
    /// others cannot give.
    lagging: HashSet<usize>,
}

/// Which holders [`Download::schedule`] asks, in turn.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Those that answer.
    Answering,
    /// Those that answer, but a hedge went around of late (for this stripe, or another).
    Lagging,
    /// Those whose requests failed, but not too often.
    Retry,
}

type FindMore<P> = Box<dyn FnMut() -> LocalBoxFuture<'static, Vec<P>>>;

/// Holders and what each said it holds of the file's shards, in order.
type Answers<P> = Vec<(P, Result<Vec<bool>, NetworkError>)>;

/// Searches for more holders one download makes at most.
const MAX_SEARCHES: u32 = 2;

impl<N: Network + Clone + 'static> Download<N> {
    /// Opens the manifest with `key` and asks every holder which shards it has.
    pub async fn start(
        net: N,
        holders: Vec<N::Peer>,
        manifest: &Manifest,
        key: &FileKey,
        window: usize,
    ) -> Result<Self, DownloadError> {
        let opened = manifest.open(key)?;
        let decoder = manifest.decoder(key)?.with_window(window);
        let mut download = Self {
            net,
            holders: Vec::new(),
            dead: HashSet::new(),
            failures: HashMap::new(),
            retries: Retries::default(),
            located: HashMap::new(),
            ids: manifest.shard_ids().to_vec(),
            decoder: Some(decoder),
            opened,
            stripes: HashMap::new(),
            in_flight: FuturesUnordered::new(),
            busy: HashMap::new(),
            wire_bytes: 0,
            corrupt: 0,
            layout_stripes: manifest.layout().stripes(),
            max_batch: usize::MAX,
            find_more: None,
            finding: None,
            searches: 0,
            holder_lost: false,
            retrying: HashMap::new(),
            next_retry: 0,
            typical: None,
            hedged: 0,
            lagging: HashSet::new(),
        };
        download.add_holders(holders).await;
        Ok(download)
    }

    /// The same download asking for at most `n` (≥ 1) shards per request (see
    /// [`crate::node::Upload::with_max_batch`] for why smaller requests can be faster).
    pub fn with_max_batch(self, n: usize) -> Self {
        Self { max_batch: n.max(1), ..self }
    }

    /// The same download asking a failed holder again as `retries` says.
    pub fn with_retries(self, retries: Retries) -> Self {
        Self { retries, ..self }
    }

    /// The same download calling `find` for more holders as soon as the holders known that
    /// answer run short of some stripe (a relay vanished mid-download, say), and once more
    /// before it gives up for want of shards (some said they held one and then did not send
    /// it), twice at most in all. The search runs while the download goes on and asks again
    /// the holders that failed. Holders found are asked at once: the retries then queued to
    /// failed holders for the stripes they hold shards of are called off, and made again
    /// (after a new wait) only for what the holders found cannot give. A holder found that
    /// had failed, even one given up, is asked again what it holds, and used again if it
    /// answers (a relay back from a restart).
    pub fn with_more_holders(
        self,
        find: impl FnMut() -> LocalBoxFuture<'static, Vec<N::Peer>> + 'static,
    ) -> Self {
        Self { find_more: Some(Box::new(find)), ..self }
    }

    /// Asks more holders which shards they have, and fetches from them too from now on.
    pub async fn add_holders(&mut self, holders: Vec<N::Peer>) {
        let holders = holders.into_iter().filter(|h| !self.holders.contains(h)).collect();
        let answers = ask_holders(&self.net, &self.ids, holders).await;
        self.take_holders(answers);
    }

    /// Searches for more holders at once, with the finder of [`Self::with_more_holders`], if
    /// some stripe lacks holders that answer (a download's start, say); this search does not
    /// count against the download's two.
    pub async fn search_if_short(&mut self) {
        if self.unlocated().is_some()
            && let Some(finding) = self.finding()
        {
            let answers = finding.await;
            self.take_holders(answers);
        }
    }

    /// Starts a search for more holders in the background: see [`Self::with_more_holders`].
    fn search(&mut self) {
        self.finding = self.finding();
        self.searches += 1;
    }

    /// A search for more holders, if there is a finder. Holders found that are known already
    /// are asked again only if they had failed: one found again may be back (a relay
    /// restarted), even one given up.
    fn finding(&mut self) -> Option<LocalBoxFuture<'static, Answers<N::Peer>>> {
        let find = self.find_more.as_mut()?;
        let found = find();
        let live: Vec<N::Peer> = (self.holders.iter().enumerate())
            .filter(|(h, _)| !self.dead.contains(h))
            .map(|(_, peer)| peer.clone())
            .collect();
        let (net, ids) = (self.net.clone(), self.ids.clone());
        Some(Box::pin(async move {
            let found = found.await.into_iter().filter(|h| !live.contains(h)).collect();
            ask_holders(&net, &ids, found).await
        }))
    }

    /// Takes what holders said they hold. The retries queued meanwhile for stripes that one
    /// of them holds shards of and can be asked at once (a new holder, or one that had failed
    /// and answers now) are called off, so that the next [`Download::schedule`] asks it
    /// instead.
    fn take_holders(&mut self, answers: Answers<N::Peer>) {
        let n = self.decoder.as_ref().map_or(1, |d| d.layout().params().shards());
        let mut found = HashSet::new();
        for (holder, answer) in answers {
            if let Some(h) = self.holders.iter().position(|known| *known == holder) {
                // A holder that had failed and answers now is back, with a clean slate.
                if let Ok(held) = answer
                    && self.dead.remove(&h)
                {
                    self.failures.remove(&h);
                    self.lagging.remove(&h);
                    let ids = self.ids.iter().zip(held).enumerate();
                    for (at, (id, _)) in ids.filter(|(_, (_, held))| *held) {
                        let holders = self.located.entry(*id).or_default();
                        if !holders.contains(&h) {
                            holders.push(h);
                        }
                        found.insert((at / n) as u64);
                    }
                }
                continue;
            }
            let h = self.holders.len();
            match answer {
                Ok(held) => {
                    let ids = self.ids.iter().zip(held).enumerate();
                    for (at, (id, _)) in ids.filter(|(_, (_, held))| *held) {
                        self.located.entry(*id).or_default().push(h);
                        found.insert((at / n) as u64);
                    }
                }
                Err(e) => {
                    tracing::debug!(%holder, error = %e, "holder did not answer");
                    self.dead.insert(h);
                }
            }
            self.holders.push(holder);
        }
        self.call_off_retries(&found);
    }

    /// Calls off the retries in flight that ask for shards of any of `stripes`: each comes
    /// back as not asked (without counting as a failure), and the next
    /// [`Download::schedule`] asks for its shards again, from holders that answer first.
    fn call_off_retries(&mut self, stripes: &HashSet<u64>) {
        self.retrying.retain(|_, (retry, asked)| {
            let call_off = asked.iter().any(|s| stripes.contains(s));
            if call_off {
                retry.abort();
            }
            !call_off
        });
    }

    /// The first stripe not yet decoded for which the holders known have fewer than k
    /// shards, with how many they have: `None` when every stripe can be fetched.
    pub fn unlocated(&self) -> Option<(u64, usize, usize)> {
        let decoder = self.decoder.as_ref()?;
        let k = decoder.layout().params().k();
        (decoder.next_stripe()..self.layout_stripes).find_map(|s| {
            let ids = decoder.stripe_ids(s).ok()?;
            let found = ids
                .iter()
                .enumerate()
                .filter(|(i, id)| {
                    decoder.has_shard(s, *i)
                        || self
                            .located
                            .get(*id)
                            .is_some_and(|hs| hs.iter().any(|h| !self.dead.contains(h)))
                })
                .count();
            (found < k).then_some((s, found, k))
        })
    }

    /// The file's name, type and hash, from the sealed part of its manifest.
    pub fn info(&self) -> &Opened {
        &self.opened
    }

    /// Shard bytes received so far.
    pub fn wire_bytes(&self) -> u64 {
        self.wire_bytes
    }

    /// Shards that arrived corrupt (and were replaced).
    pub fn corrupt_shards(&self) -> u64 {
        self.corrupt
    }

    /// Shards asked past the k a stripe needs because a holder was slow to answer.
    pub fn hedged_shards(&self) -> u64 {
        self.hedged
    }

    /// The next segment of plaintext, authenticated, or `None` after the last one.
    pub async fn next_segment(&mut self) -> Result<Option<Vec<u8>>, DownloadError> {
        let Some(sealed) = self.next_sealed().await? else { return Ok(None) };
        let decoder = self.decoder.as_ref().ok_or(codec::Error::Finished)?;
        Ok(Some(decoder.open(sealed)?))
    }

    /// The next sealed segment, for a host that opens segments itself (and refuses one that
    /// does not authenticate), or `None` after the last one.
    pub async fn next_sealed(&mut self) -> Result<Option<SealedSegment>, DownloadError> {
        loop {
            let Some(decoder) = self.decoder.as_mut() else { return Ok(None) };
            if decoder.is_done() {
                if let Some(decoder) = self.decoder.take() {
                    decoder.finish()?;
                }
                return Ok(None);
            }
            if decoder.is_next_ready() {
                let sealed = decoder.decode_next_sealed()?;
                self.stripes.remove(&sealed.index);
                return Ok(Some(sealed));
            }
            self.schedule();
            if std::mem::take(&mut self.holder_lost)
                && self.finding.is_none()
                && self.searches < MAX_SEARCHES
                && self.find_more.is_some()
                && self.unlocated().is_some()
            {
                self.search();
            }
            // A reply, the search's answers or the time to hedge, whichever comes first (the
            // replies already in before the timer, which is set once the requests have gone
            // out); with nothing in flight, the search's answers (or the end of the download).
            let mut hedge = None;
            let next = poll_fn(|cx| {
                if let Some(finding) = self.finding.as_mut()
                    && let Poll::Ready(answers) = finding.as_mut().poll(cx)
                {
                    return Poll::Ready(Next::Found(answers));
                }
                if (!self.in_flight.is_empty() || self.finding.is_none())
                    && let Poll::Ready(reply) = self.in_flight.poll_next_unpin(cx)
                {
                    return Poll::Ready(Next::Reply(reply));
                }
                if hedge.is_none() {
                    hedge = self.hedge_in().map(futures_timer::Delay::new);
                }
                match hedge.as_mut().map(|timer| std::pin::Pin::new(timer).poll(cx)) {
                    Some(Poll::Ready(())) => Poll::Ready(Next::Hedge),
                    _ => Poll::Pending,
                }
            })
            .await;
            match next {
                Next::Reply(Some(reply)) => self.absorb(reply),
                // Nothing in flight and nothing left to ask: a last search, if one is left,
                // else the stripe cannot be completed.
                Next::Reply(None) => {
                    if self.searches < MAX_SEARCHES && self.find_more.is_some() {
                        self.search();
                        continue;
                    }
                    return Err(decoder_error(self.decoder.as_mut()));
                }
                Next::Found(answers) => {
                    self.finding = None;
                    self.take_holders(answers);
                }
                Next::Hedge => self.hedge(),
            }
        }
    }

    /// How long a request may be out before it is hedged (see [`HEDGE_FLOOR`]).
    fn hedge_after(&self) -> Duration {
        self.typical.map_or(HEDGE_DEFAULT, |t| (t * 4).clamp(HEDGE_FLOOR, HEDGE_CEILING))
    }

    /// The requests of the next stripe, which the download waits for, that are out and not
    /// hedged yet, as (shard, holder, when it went out); none once the stripe may ask all its
    /// shards.
    fn unhedged(&self) -> Vec<(usize, usize, Instant)> {
        let Some(decoder) = self.decoder.as_ref() else { return Vec::new() };
        let Some(state) = self.stripes.get(&decoder.next_stripe()) else { return Vec::new() };
        let params = decoder.layout().params();
        if params.k() + state.hedges >= params.shards() {
            return Vec::new();
        }
        (state.sent.iter())
            .filter(|(i, (h, _))| !state.hedged.contains(&(**i, *h)))
            .filter_map(|(i, (h, at))| Some((*i, *h, at.get()?)))
            .collect()
    }

    /// How long until a request of the next stripe is out long enough to be hedged; `None`
    /// when none can be.
    fn hedge_in(&self) -> Option<Duration> {
        let oldest = self.unhedged().into_iter().map(|(_, _, at)| at).min()?;
        Some((oldest + self.hedge_after()).saturating_duration_since(Instant::now()))
    }

    /// Lets the next stripe ask one more shard than it needs for each of its requests out for
    /// too long, of holders other than theirs (at the next [`Download::schedule`]), so that a
    /// slow holder does not hold the download up; those holders are asked only for what the
    /// others cannot give from then on, until they answer.
    fn hedge(&mut self) {
        let Some(before) = Instant::now().checked_sub(self.hedge_after()) else { return };
        let late: Vec<(usize, usize)> = (self.unhedged().into_iter())
            .filter(|(_, _, at)| *at <= before)
            .map(|(i, h, _)| (i, h))
            .collect();
        let Some(decoder) = self.decoder.as_ref() else { return };
        let (stripe, params) = (decoder.next_stripe(), decoder.layout().params());
        let Some(state) = self.stripes.get_mut(&stripe) else { return };
        for &(i, h) in &late {
            state.hedged.insert((i, h));
            state.slow.insert(h);
            self.lagging.insert(h);
        }
        state.hedges = (state.hedges + late.len()).min(params.m());
        tracing::debug!(stripe, ?late, "holders slow to answer: asking other shards elsewhere");
    }

    /// The stripe the next segment comes from, and how many stripes the file has.
    pub fn position(&self) -> (u64, u64) {
        let stripes = self.layout_stripes;
        (self.decoder.as_ref().map_or(stripes, Decoder::next_stripe), stripes)
    }

    /// Asks for enough shards of every stripe in the window, data shards first, from holders
    /// not yet tried for them: one request per holder and stripe, so that replies stream in
    /// and decoding overlaps the transfer.
    fn schedule(&mut self) {
        let Some(decoder) = self.decoder.as_ref() else { return };
        let params = decoder.layout().params();
        let (k, n) = (params.k(), params.shards());
        let mut batches: HashMap<(usize, u64), Batch> = HashMap::new();
        for s in decoder.next_stripe()..decoder.window_end() {
            let Ok(ids) = decoder.stripe_ids(s) else { continue };
            let state = self.stripes.entry(s).or_default();
            let held = (0..n).filter(|&i| decoder.has_shard(s, i)).count();
            let have = held + state.asked.len();
            // The shards the stripe needs, and those its hedges add, asked of holders not slow.
            let mut wanted = (k + state.hedges).min(n).saturating_sub(have);
            let need = k.saturating_sub(have);
            let room = wanted - need;
            // Holders that answer first, for every shard; then, only for what they cannot
            // give, those slow of late; then holders whose requests failed but not too often
            // (one may have restarted, or reconnected), each asked again only for shards it has
            // not answered.
            let first = wanted;
            for pass in [Pass::Answering, Pass::Lagging, Pass::Retry] {
                if pass == Pass::Lagging {
                    // What was asked past the need is the hedges'; the rest of their room
                    // goes unused rather than to slow holders.
                    self.hedged += (first - wanted).saturating_sub(need) as u64;
                    wanted = wanted.saturating_sub(room);
                }
                for (i, id) in ids.iter().enumerate() {
                    if wanted == 0 {
                        break;
                    }
                    if decoder.has_shard(s, i) || state.asked.contains(&i) {
                        continue;
                    }
                    let usable = |h: &usize| {
                        let failed = self.dead.contains(h);
                        let slow = self.lagging.contains(h) || state.slow.contains(h);
                        let usable = match pass {
                            Pass::Answering => !failed && !slow,
                            Pass::Lagging => !failed && slow,
                            Pass::Retry => {
                                failed
                                    && self
                                        .failures
                                        .get(h)
                                        .is_some_and(|&n| n < self.retries.max_failures)
                            }
                        };
                        usable && !state.tried.contains(&(i, *h))
                    };
                    let holder =
                        self.located.get(id).and_then(|hs| hs.iter().copied().find(usable));
                    let Some(h) = holder else { continue };
                    batches.entry((h, s)).or_default().push((s, i, *id));
                    state.tried.insert((i, h));
                    state.asked.insert(i);
                    wanted -= 1;
                }
            }
        }
        let mut batches: Vec<_> = batches.into_iter().collect();
        batches.sort_by_key(|((h, s), _)| (*s, *h));
        let max = self.max_batch;
        let batches = batches.into_iter().flat_map(|((h, _), batch)| {
            batch.chunks(max).map(|c| (h, c.to_vec())).collect::<Vec<_>>()
        });
        for (h, batch) in batches {
            let Some(peer) = self.holders.get(h).cloned() else { continue };
            let net = self.net.clone();
            let ids = batch.iter().map(|(_, _, id)| *id).collect();
            let failures_then = self.failures.get(&h).copied().unwrap_or(0);
            let wait = if self.dead.contains(&h) {
                Some(self.retries.wait(failures_then))
            } else {
                self.busy.get(&h).map(|&n| busy_wait(n))
            };
            let sent_at = SentAt::default();
            for (s, i, _) in &batch {
                if let Some(state) = self.stripes.get_mut(s) {
                    state.sent.insert(*i, (h, Rc::clone(&sent_at)));
                }
            }
            let retry_stripes =
                self.dead.contains(&h).then(|| batch.iter().map(|(s, _, _)| *s).collect());
            let request = async move {
                if let Some(wait) = wait {
                    futures_timer::Delay::new(wait).await;
                }
                let sent = Instant::now();
                sent_at.set(Some(sent));
                let reply = net.get_shards(&peer, ids).await;
                (reply, sent.elapsed())
            };
            let (retry, request) = if let Some(retry_stripes) = retry_stripes {
                let (handle, registration) = AbortHandle::new_pair();
                let key = self.next_retry;
                self.next_retry += 1;
                self.retrying.insert(key, (handle, retry_stripes));
                (Some(key), Either::Left(Abortable::new(request, registration)))
            } else {
                (None, Either::Right(request))
            };
            self.in_flight.push(Box::pin(async move {
                let outcome = match request {
                    Either::Left(retry) => retry.await.ok(),
                    Either::Right(request) => Some(request.await),
                };
                Reply { holder: h, batch, failures_then, retry, outcome }
            }));
        }
    }

    /// Takes a holder's reply: verified shards go to the decoder; the rest are retried
    /// elsewhere by the next [`Download::schedule`].
    fn absorb(&mut self, reply: Reply) {
        let Reply { holder: h, batch, failures_then, retry, outcome } = reply;
        if let Some(key) = retry {
            self.retrying.remove(&key);
        }
        let Some((reply, took)) = outcome else {
            // Called off: not asked after all.
            for (s, i, _) in &batch {
                if let Some(state) = self.stripes.get_mut(s) {
                    state.asked.remove(i);
                    state.sent.remove(i);
                    state.tried.remove(&(*i, h));
                }
            }
            return;
        };
        let fetched = match reply {
            Ok(fetched) if fetched.len() == batch.len() => {
                self.dead.remove(&h);
                self.failures.remove(&h);
                self.lagging.remove(&h);
                if fetched.iter().all(|f| matches!(f, Fetched::Verified(_))) {
                    self.typical = Some(self.typical.map_or(took, |t| (t * 7 + took) / 8));
                }
                fetched
            }
            failed => {
                let holder = self.holders.get(h);
                match failed {
                    Ok(_) => tracing::warn!(?holder, "holder sent the wrong number of shards"),
                    Err(e @ NetworkError::InvalidReply { .. }) => {
                        tracing::warn!(?holder, error = %e, "holder sent an invalid reply");
                    }
                    Err(e) => tracing::debug!(?holder, error = %e, "shard request failed"),
                }
                if self.dead.insert(h) {
                    self.holder_lost = true;
                }
                // Once for all the requests that were out to it when it failed.
                let failures = self.failures.entry(h).or_default();
                if *failures == failures_then {
                    *failures += 1;
                }
                // Not answered: it may be asked for them again (see `schedule`). What it did
                // answer stays tried, so that a holder whose requests fail in between cannot
                // be asked again without end.
                for (s, i, _) in &batch {
                    if let Some(state) = self.stripes.get_mut(s) {
                        state.tried.remove(&(*i, h));
                    }
                }
                vec![Fetched::Missing; batch.len()]
            }
        };
        let deferred = fetched.iter().any(|f| matches!(f, Fetched::Deferred));
        if deferred && !fetched.iter().any(|f| matches!(f, Fetched::Verified(_))) {
            *self.busy.entry(h).or_default() += 1;
        } else {
            self.busy.remove(&h);
        }
        for ((s, i, _), fetched) in batch.into_iter().zip(fetched) {
            let Some(state) = self.stripes.get_mut(&s) else { continue };
            state.asked.remove(&i);
            state.sent.remove(&i);
            match fetched {
                Fetched::Verified(shard) => self.accept(h, s, i, shard),
                Fetched::Corrupt { actual } => {
                    let holder = self.holders.get(h);
                    tracing::warn!(?holder, stripe = s, shard = i, %actual, "refused a shard that does not match its id");
                    self.corrupt += 1;
                }
                Fetched::Deferred => {
                    state.tried.remove(&(i, h));
                }
                Fetched::Missing => {}
            }
        }
    }

    fn accept(&mut self, h: usize, s: u64, i: usize, shard: VerifiedShard) {
        let Some(decoder) = self.decoder.as_mut() else { return };
        let len = shard.bytes().len() as u64;
        match decoder.add_verified_shard(s, i, shard) {
            Ok(_) => self.wire_bytes += len,
            Err(e) => {
                let holder = self.holders.get(h);
                tracing::warn!(?holder, stripe = s, shard = i, error = %e, "refused a shard");
                self.corrupt += 1;
            }
        }
    }
}

impl<N: Network> std::fmt::Debug for Download<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("holders", &self.holders)
            .field("in_flight", &self.in_flight.len())
            .field("wire_bytes", &self.wire_bytes)
            .finish_non_exhaustive()
    }
}

/// Asks each of `holders` which of `ids` it holds.
async fn ask_holders<N: Network>(
    net: &N,
    ids: &[ShardId],
    holders: Vec<N::Peer>,
) -> Answers<N::Peer> {
    let asks = holders.iter().map(|h| async move {
        let mut held = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_BATCH) {
            held.extend(net.has_shards(h, chunk.to_vec()).await?);
        }
        Ok::<_, NetworkError>(held)
    });
    holders.iter().cloned().zip(join_all(asks).await).collect()
}

fn decoder_error(decoder: Option<&mut Decoder>) -> DownloadError {
    match decoder.map(Decoder::decode_next_sealed) {
        Some(Err(e)) => e.into(),
        _ => codec::Error::Incomplete { next: 0, stripes: 0 }.into(),
    }
}

/// How a download asks again a holder whose requests failed: after `first`, doubling up to
/// `max_wait`, until `max_failures` failures in a row give it up. A failed holder is asked
/// only for what no other holder can give, so these waits hold a download up only when
/// nothing else can complete it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retries {
    /// The wait after the first failure.
    pub first: Duration,
    /// The longest wait.
    pub max_wait: Duration,
    /// Failed requests in a row after which the holder is not asked again.
    pub max_failures: u32,
}

impl Default for Retries {
    /// 250 ms, doubling to 4 s, given up at the eleventh failure: 27.75 s of waits in all,
    /// time for a relay to restart and for a browser to connect to it again (a browser
    /// dials a lost relay again after 0.5, 1.5, 3.5, 7.5, 15.5 and 25.5 s).
    fn default() -> Self {
        Self {
            first: Duration::from_millis(250),
            max_wait: Duration::from_secs(4),
            max_failures: 11,
        }
    }
}

impl Retries {
    /// How long to wait before asking a holder again after `n` (≥ 1) failed requests in a
    /// row.
    pub fn wait(&self, n: u32) -> Duration {
        let doublings = n.saturating_sub(1).min(16);
        self.first.saturating_mul(1 << doublings).min(self.max_wait)
    }

    /// The waits before a holder is given up, in all.
    pub fn patience(&self) -> Duration {
        (1..self.max_failures).map(|n| self.wait(n)).sum()
    }
}

/// How long to wait before asking a holder again after `n` replies in a row deferred every
/// shard: 25 ms, doubling, at most a second.
fn busy_wait(n: u32) -> std::time::Duration {
    std::time::Duration::from_millis(25u64 << n.saturating_sub(1).min(6))
        .min(std::time::Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Retries, busy_wait};

    #[test]
    fn a_busy_holder_is_asked_again_after_a_wait_that_doubles_to_a_second() {
        let waits: Vec<Duration> = (1..=8).map(busy_wait).collect();
        let ms = [25, 50, 100, 200, 400, 800, 1000, 1000];
        assert_eq!(waits, ms.map(Duration::from_millis));
        assert_eq!(busy_wait(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn a_failed_holder_is_asked_again_after_a_wait_that_doubles() {
        let retries = Retries::default();
        let waits: Vec<Duration> = (1..=6).map(|n| retries.wait(n)).collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 4000].map(Duration::from_millis));
        assert_eq!(retries.wait(u32::MAX), Duration::from_millis(4000));
        assert_eq!(retries.patience(), Duration::from_millis(27_750));
    }
}
