//! Where the made-up faces are, shared by the simulators that list faces.

/// A face box `[x1, y1, x2, y2]` in pixels.
pub(crate) type Bbox = [f64; 4];

/// One detected face, in the order the vendor lists it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Face {
    pub bbox: Bbox,
    pub largest: bool,
    /// 0 for the largest face, then 1, 2, … for the others (drives their made-up attributes).
    pub rank: u32,
}

/// The centered middle half of the image: the default box of the largest face.
pub(crate) fn default_bbox((width, height): (u32, u32)) -> Bbox {
    let (w, h) = (f64::from(width / 4), f64::from(height / 4));
    [w, h, 3.0 * w, 3.0 * h]
}

/// Lays out `count` faces. The others are strictly smaller than `largest` and deterministic;
/// the largest is listed second whenever there are several, so a client that takes the first
/// (or, from three faces on, the last) entry instead of the largest one is caught.
pub(crate) fn layout(count: u32, (width, height): (u32, u32), largest: Bbox) -> Vec<Face> {
    let [x1, y1, x2, y2] = largest;
    let (lw, lh) = (x2 - x1, y2 - y1);
    let mut faces: Vec<Face> = (1..count)
        .map(|rank| {
            let shrink = f64::from(rank + 1);
            let (w, h) = (
                (lw / shrink).floor().max(1.0),
                (lh / shrink).floor().max(1.0),
            );
            // Spread the smaller faces over the frame with fixed, unrelated fractions.
            let fx = f64::from((rank * 37) % 100) / 100.0;
            let fy = f64::from((rank * 61) % 100) / 100.0;
            let x = ((f64::from(width) - w).max(0.0) * fx).floor();
            let y = ((f64::from(height) - h).max(0.0) * fy).floor();
            Face {
                bbox: [x, y, x + w, y + h],
                largest: false,
                rank,
            }
        })
        .collect();
    if count > 0 {
        let at = faces.len().min(1);
        faces.insert(
            at,
            Face {
                bbox: largest,
                largest: true,
                rank: 0,
            },
        );
    }
    faces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn area([x1, y1, x2, y2]: Bbox) -> f64 {
        (x2 - x1) * (y2 - y1)
    }

    #[test]
    fn largest_is_never_first_when_there_are_several() {
        let dims = (640, 480);
        let largest = default_bbox(dims);
        assert_eq!(largest, [160.0, 120.0, 480.0, 360.0]);
        assert!(layout(0, dims, largest).is_empty());
        assert_eq!(layout(1, dims, largest)[0].bbox, largest);
        for count in 2..8 {
            let faces = layout(count, dims, largest);
            assert_eq!(faces.len(), count as usize);
            assert!(faces[1].largest);
            assert!(!faces[0].largest);
            for face in faces.iter().filter(|f| !f.largest) {
                assert!(area(face.bbox) < area(largest));
                assert!(face.bbox[2] <= 640.0 && face.bbox[3] <= 480.0);
            }
            assert_eq!(faces, layout(count, dims, largest));
        }
    }
}
