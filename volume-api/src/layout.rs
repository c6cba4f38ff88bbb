//! A coded volume's scheme and fragment layout, as every reader and writer computes it.

use cellar_erasure::{Layout, Scheme as CodeScheme};
use cellar_proto::master as mpb;
use tonic::Status;

use crate::FRAGMENT_CHUNK_BYTES;
use crate::errors::bad_request;

/// The coding scheme of a volume record ("rs-k-m"), by the erasure crate's parser.
pub fn code_scheme(text: &str) -> Result<CodeScheme, Status> {
    text.parse().map_err(|e: cellar_erasure::SchemeError| bad_request(format!("scheme {text:?}: {e}")))
}

/// The fragment layout of a coded volume, as every reader and writer computes it.
pub fn layout_of(v: &mpb::Volume) -> Result<Layout, Status> {
    Layout::new(code_scheme(&v.scheme)?, v.size_bytes, FRAGMENT_CHUNK_BYTES)
        .map_err(|e| bad_request(e.to_string()))
}
