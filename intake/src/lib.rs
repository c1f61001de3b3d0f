//! What a caller sent, read and checked before any work is done for it: the submission
//! (`multipart/form-data` or JSON, caps enforced while reading, every field checked), and the
//! image's format (by magic number), structure (whole through its end marker) and header
//! (dimensions and decoded size within caps); and, for what is forwarded, the image without its
//! personal metadata (`metadata`). Nothing here decodes a pixel or knows a tenant;
//! it is small on purpose, so that the parsers that face the internet can be fuzzed alone.

mod format;
pub mod header;
pub mod metadata;
mod refusal;
pub mod structure;
pub mod submission;

pub use format::ImageFormat;
pub use header::{Header, HeaderCaps, inspect};
pub use refusal::{BodyError, Code, Refused};
pub use submission::{
    IMAGE_FIELDS, MAX_EXTERNAL_ID, MAX_METADATA_BYTES, Submission, SubmissionCaps, is_format_char,
    read_submission,
};
