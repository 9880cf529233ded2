//! The files this browser keeps: removing one frees its shards and manifest.

use shardweb_core::{Manifest, ManifestId};

use crate::error::NodeError;
use crate::node::Node;

/// Removes a file's record, manifest and shards from this browser.
pub async fn remove(node: &Node, manifest_id: &str) -> Result<(), NodeError> {
    let id: ManifestId = manifest_id.parse()?;
    if let Some(bytes) = node.store.get_manifest(id).await?
        && let Ok(manifest) = Manifest::decode_as(&id, &bytes)
    {
        node.store.delete_shards(manifest.shard_ids()).await?;
        node.store.delete_manifest(id).await?;
    }
    node.store.delete_file(manifest_id).await
}
