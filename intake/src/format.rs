//! The image formats livegate takes, recognised by their magic numbers.

use image::ImageFormat as Codec;

/// Formats livegate accepts at its door, recognised by magic number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Jpeg,
    Png,
    Webp,
    Tiff,
}

impl ImageFormat {
    pub const ALL: [ImageFormat; 4] = [
        ImageFormat::Jpeg,
        ImageFormat::Png,
        ImageFormat::Webp,
        ImageFormat::Tiff,
    ];

    /// Recognise the format from the first bytes; `None` for anything else.
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        match bytes {
            [0xFF, 0xD8, 0xFF, ..] => Some(ImageFormat::Jpeg),
            [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, ..] => Some(ImageFormat::Png),
            [
                b'R',
                b'I',
                b'F',
                b'F',
                _,
                _,
                _,
                _,
                b'W',
                b'E',
                b'B',
                b'P',
                ..,
            ] => Some(ImageFormat::Webp),
            [b'I', b'I', 0x2A, 0x00, ..] | [b'M', b'M', 0x00, 0x2A, ..] => Some(ImageFormat::Tiff),
            _ => None,
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "image/jpeg",
            ImageFormat::Png => "image/png",
            ImageFormat::Webp => "image/webp",
            ImageFormat::Tiff => "image/tiff",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "jpg",
            ImageFormat::Png => "png",
            ImageFormat::Webp => "webp",
            ImageFormat::Tiff => "tiff",
        }
    }

    pub fn codec(self) -> Codec {
        match self {
            ImageFormat::Jpeg => Codec::Jpeg,
            ImageFormat::Png => Codec::Png,
            ImageFormat::Webp => Codec::WebP,
            ImageFormat::Tiff => Codec::Tiff,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_magic_numbers() {
        assert_eq!(
            ImageFormat::sniff(&[0xFF, 0xD8, 0xFF, 0xE0]),
            Some(ImageFormat::Jpeg)
        );
        assert_eq!(ImageFormat::sniff(b"GIF89a"), None);
        assert_eq!(ImageFormat::sniff(b"II*\0rest"), Some(ImageFormat::Tiff));
        assert_eq!(
            ImageFormat::sniff(b"RIFF1234WEBPVP8 "),
            Some(ImageFormat::Webp)
        );
    }
}
