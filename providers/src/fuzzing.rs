//! What the fuzz targets (`fuzz/`) drive: each adapter's reading of an upstream answer, as a
//! call reads it once the exchange is done. Only with the `fuzzing` feature.

use crate::{ProviderAnswer, ProviderError};

pub fn didit(status: u16, body: &str) -> Result<ProviderAnswer, ProviderError> {
    crate::didit::read(status, body)
}

pub fn kairos(
    status: u16,
    body: &str,
    threshold: f64,
    submitted: (u32, u32),
) -> Result<ProviderAnswer, ProviderError> {
    crate::kairos::read(status, body, threshold, submitted)
}

pub fn collections(status: u16, body: &str) -> Result<ProviderAnswer, ProviderError> {
    crate::collections::read(status, body)
}
