//! The files this browser keeps: removing one, or forgetting a transfer, frees its shards and
//! manifest, but not a shard something else kept here still needs.

use std::collections::HashSet;

use shardweb_core::{Manifest, ManifestId, ShardId};

use crate::error::NodeError;
use crate::node::Node;

/// Removes a file's record, manifest and shards from this browser.
pub async fn remove(node: &Node, manifest_id: &str) -> Result<(), NodeError> {
    let id: ManifestId = manifest_id.parse()?;
    if let Some(bytes) = node.store.get_manifest(id).await?
        && let Ok(manifest) = Manifest::decode_as(&id, &bytes)
    {
        free(node, manifest.shard_ids(), Some(id), None).await?;
        node.store.delete_manifest(id).await?;
    }
    node.store.delete_file(manifest_id).await
}

/// Forgets transfer `id` and, when it kept shards here (`kept_here`), the shards it added to
/// this store: those it noted as it wrote them (see `IdbStore::put_transfer_shards`), so that
/// an upload's stripe written but not yet recorded goes too, and a shard held before stays.
/// An upload's record from before transfers noted them falls back to its recorded stripes.
/// A shard it added that a file or transfer since needs too stays (see [`free`]); so
/// does a download's manifest that a listed file needs.
pub async fn discard(node: &Node, id: &str, kept_here: bool) -> Result<(), NodeError> {
    if kept_here {
        let ids = match node.store.added_shards(id).await? {
            Some(ids) => ids,
            None => node.store.stripes(id).await?.into_iter().flat_map(|(_, ids)| ids).collect(),
        };
        free(node, &ids, None, Some(id)).await?;
    }
    node.store.delete_transfer(id).await?;
    if let Some(manifest) = id.strip_prefix("down-")
        && node.store.file(manifest).await?.is_none()
        && let Ok(manifest) = manifest.parse()
    {
        node.store.delete_manifest(manifest).await?;
    }
    Ok(())
}

/// Deletes the shards among `ids` that nothing kept here needs but the file `except_file` and
/// the transfer `except_transfer`, which are going. Files of the same shard length can share
/// a shard (a data shard of zero padding, say): it goes with the last of them.
pub async fn free(
    node: &Node,
    ids: &[ShardId],
    except_file: Option<ManifestId>,
    except_transfer: Option<&str>,
) -> Result<u64, NodeError> {
    let needed = in_use(node, except_file, except_transfer).await?;
    let unused: Vec<ShardId> = ids.iter().filter(|id| !needed.contains(id)).copied().collect();
    node.store.delete_shards(&unused).await
}

/// The shards of every file listed here but `except_file`, of every unfinished download but
/// `except_transfer` (from its manifest) and those every unfinished transfer but
/// `except_transfer` recorded or wrote here (see `IdbStore::transfer_shards`).
///
/// Read in transactions of their own, apart from the deletion that follows: a write that lands
/// in between (another tab's) is not seen.
async fn in_use(
    node: &Node,
    except_file: Option<ManifestId>,
    except_transfer: Option<&str>,
) -> Result<HashSet<ShardId>, NodeError> {
    let listed = node.store.files().await?;
    let mut manifests: HashSet<ManifestId> = listed
        .iter()
        .filter_map(|f| f.manifest_id.parse::<ManifestId>().ok())
        .filter(|id| Some(*id) != except_file)
        .collect();
    // A download of the file being removed still needs its shards.
    let downloads = node.store.transfer_ids().await?;
    let others = downloads.iter().filter(|t| Some(t.as_str()) != except_transfer);
    manifests.extend(others.filter_map(|t| t.strip_prefix("down-")?.parse::<ManifestId>().ok()));
    let mut needed = HashSet::new();
    for id in manifests {
        if let Some(bytes) = node.store.get_manifest(id).await?
            && let Ok(manifest) = Manifest::decode_as(&id, &bytes)
        {
            needed.extend(manifest.shard_ids().iter().copied());
        }
    }
    for (transfer, ids) in node.store.transfer_shards().await? {
        if Some(transfer.as_str()) != except_transfer {
            needed.extend(ids);
        }
    }
    Ok(needed)
}
