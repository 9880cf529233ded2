//! The files this browser keeps: removing one, or forgetting a transfer, frees its shards and
//! manifest, but not a shard or manifest something else kept here still needs (see
//! [`IdbStore::forget`](crate::idb_store::IdbStore::forget), which does it in one transaction).

use shardweb_core::ManifestId;

use crate::error::NodeError;
use crate::idb_store::Forget;
use crate::node::Node;

/// Removes a file's record, manifest and shards from this browser; a shard another file or a
/// transfer needs stays, and so does the manifest while a download of the file runs. A file
/// not listed here is refused ([`NodeError::NotKept`]).
pub async fn remove(node: &Node, manifest_id: &str) -> Result<(), NodeError> {
    let id: ManifestId = manifest_id.parse()?;
    node.store.forget(Forget::File(id)).await.map(drop)
}

/// Forgets transfer `id` and, when it kept shards here (`kept_here`), the shards it added to
/// this store: those it noted as it wrote them (see `IdbStore::put_transfer_shards`), so that
/// an upload's stripe written but not yet recorded goes too, and a shard held before stays.
/// An upload's record from before transfers noted them falls back to its recorded stripes.
/// A download's manifest goes too, unless a listed file needs it.
pub async fn discard(node: &Node, id: &str, kept_here: bool) -> Result<(), NodeError> {
    node.store.forget(Forget::Transfer { id, kept_here }).await.map(drop)
}
