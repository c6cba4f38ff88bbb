//! cellar's erasure coding: the math of coded volumes, with no I/O.
//!
//! A sealed volume of V bytes under `rs-k-m` ([`Scheme`]) becomes k data and m parity
//! fragments of F bytes each ([`Layout`]). The layout is systematic and contiguous: data
//! fragment i is volume bytes [i*F, (i+1)*F), so a normal read decodes nothing; parity
//! fragment j's byte x is the Reed-Solomon code (reed-solomon-erasure 6, GF(2^8)) of byte x
//! of the k data fragments. Any k fragments rebuild the rest.
//!
//! Users and the calls they make:
//! - volume servers encode a sealed volume stripe by stripe with [`StripeEncoder`] (memory
//!   (k + m) x stripe height, whatever the volume's size), and rebuild a lost fragment with
//!   [`Codec::rebuild_stripe`] over the same stripes;
//! - frontends serve reads with [`plan_read`] (which fragment bytes to fetch, decoding only
//!   when a needed data fragment is unavailable) and [`assemble`] (or [`assemble_owned`]);
//! - the durability simulator uses [`Layout`], [`FragmentSet`] and the same planning.
//!
//! Bad input (wrong lengths, unknown indices, too few fragments) is an [`ErasureError`],
//! never a panic.

mod codec;
mod encoder;
mod error;
mod fragment_set;
mod gf;
mod layout;
mod read;
mod scheme;

pub use codec::Codec;
pub use encoder::{EncodedStripe, StripeEncoder};
pub use error::{ErasureError, SchemeError};
pub use fragment_set::FragmentSet;
pub use layout::{CHUNK_BYTES_MAX, DataSpan, Layout, STRIPE_BYTES_MAX, Stripe, VOLUME_LEN_BYTES_MAX};
pub use read::{FragmentRead, READ_LEN_BYTES_MAX, ReadPlan, assemble, assemble_owned, plan_read};
pub use scheme::{FRAGMENTS_MAX, Scheme};
