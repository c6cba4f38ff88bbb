//! A coded volume's scheme and fragment layout, as every reader and writer computes it.

use cellar_erasure::{Layout, Scheme};
use cellar_proto::master as mpb;
use tonic::Status;

use crate::FRAGMENT_CHUNK_BYTES;
use crate::errors::bad_request;

/// The validated coding scheme of a volume record.
pub fn code_scheme(v: &mpb::Volume) -> Result<Scheme, Status> {
    cellar_proto::scheme_of(v.scheme.as_ref())
        .map_err(|e| bad_request(format!("volume {}: scheme {e}", v.volume_id)))
}

/// The fragment layout of a coded volume, as every reader and writer computes it.
pub fn layout_of(v: &mpb::Volume) -> Result<Layout, Status> {
    Layout::new(code_scheme(v)?, v.size_bytes, FRAGMENT_CHUNK_BYTES).map_err(|e| bad_request(e.to_string()))
}
