//! A constant-velocity Kalman filter on (cx, cy, a, h): box centre, aspect ratio
//! (w / h) and height, with their per-frame velocities — the filter of
//! SORT/DeepSORT/ByteTrack, on plain arrays.
//!
//! Noise scales with the box height (`STD_WEIGHT_POSITION`, `STD_WEIGHT_VELOCITY`),
//! so small and large boxes get comparable relative uncertainty.

// Matrix code reads best with explicit indices.
#![allow(clippy::needless_range_loop)]

/// State dimension: (cx, cy, a, h, vcx, vcy, va, vh).
pub const DIM_X: usize = 8;
/// Measurement dimension: (cx, cy, a, h).
pub const DIM_Z: usize = 4;

const STD_WEIGHT_POSITION: f64 = 1.0 / 20.0;
const STD_WEIGHT_VELOCITY: f64 = 1.0 / 160.0;

pub type Vector8 = [f64; DIM_X];
pub type Matrix8 = [[f64; DIM_X]; DIM_X];
pub type Vector4 = [f64; DIM_Z];
pub type Matrix4 = [[f64; DIM_Z]; DIM_Z];

/// Mean and covariance of one track's state.
#[derive(Debug, Clone, PartialEq)]
pub struct KalmanState {
    pub mean: Vector8,
    pub covariance: Matrix8,
}

fn diag8(v: &Vector8) -> Matrix8 {
    let mut m = [[0.0; DIM_X]; DIM_X];
    for i in 0..DIM_X {
        m[i][i] = v[i] * v[i];
    }
    m
}

impl KalmanState {
    /// A new track from its first measurement: velocities 0, wide velocity uncertainty.
    pub fn initiate(z: Vector4) -> Self {
        let h = z[3].abs().max(1.0);
        let mut mean = [0.0; DIM_X];
        mean[..DIM_Z].copy_from_slice(&z);
        let std = [
            2.0 * STD_WEIGHT_POSITION * h,
            2.0 * STD_WEIGHT_POSITION * h,
            1e-2,
            2.0 * STD_WEIGHT_POSITION * h,
            10.0 * STD_WEIGHT_VELOCITY * h,
            10.0 * STD_WEIGHT_VELOCITY * h,
            1e-5,
            10.0 * STD_WEIGHT_VELOCITY * h,
        ];
        Self {
            mean,
            covariance: diag8(&std),
        }
    }

    /// One frame ahead: x = F x, P = F P Fᵀ + Q, with F the constant-velocity model (dt = 1 frame).
    pub fn predict(&mut self) {
        let h = self.mean[3].abs().max(1.0);
        let std = [
            STD_WEIGHT_POSITION * h,
            STD_WEIGHT_POSITION * h,
            1e-2,
            STD_WEIGHT_POSITION * h,
            STD_WEIGHT_VELOCITY * h,
            STD_WEIGHT_VELOCITY * h,
            1e-5,
            STD_WEIGHT_VELOCITY * h,
        ];
        for i in 0..DIM_Z {
            self.mean[i] += self.mean[i + DIM_Z];
        }
        // F P: row i (< 4) gains row i + 4.
        let p = &mut self.covariance;
        for i in 0..DIM_Z {
            for j in 0..DIM_X {
                p[i][j] += p[i + DIM_Z][j];
            }
        }
        // (F P) Fᵀ: column j (< 4) gains column j + 4.
        for row in p.iter_mut() {
            for j in 0..DIM_Z {
                row[j] += row[j + DIM_Z];
            }
        }
        let q = diag8(&std);
        for i in 0..DIM_X {
            p[i][i] += q[i][i];
        }
    }

    /// The measurement the state predicts, and its covariance S = H P Hᵀ + R.
    pub fn project(&self) -> (Vector4, Matrix4) {
        let h = self.mean[3].abs().max(1.0);
        let r = [
            STD_WEIGHT_POSITION * h,
            STD_WEIGHT_POSITION * h,
            1e-1,
            STD_WEIGHT_POSITION * h,
        ];
        let mut z = [0.0; DIM_Z];
        z.copy_from_slice(&self.mean[..DIM_Z]);
        let mut s = [[0.0; DIM_Z]; DIM_Z];
        for i in 0..DIM_Z {
            for j in 0..DIM_Z {
                s[i][j] = self.covariance[i][j];
            }
            s[i][i] += r[i] * r[i];
        }
        (z, s)
    }

    /// Corrects the state with measurement `z`. Returns false (state unchanged) when the
    /// innovation covariance is singular or `z` is not finite.
    pub fn update(&mut self, z: Vector4) -> bool {
        if z.iter().any(|v| !v.is_finite()) {
            return false;
        }
        let (projected, s) = self.project();
        let Some(s_inv) = invert4(&s) else {
            return false;
        };
        // K = P Hᵀ S⁻¹ (8×4); P Hᵀ is the first four columns of P.
        let mut k = [[0.0; DIM_Z]; DIM_X];
        for i in 0..DIM_X {
            for j in 0..DIM_Z {
                k[i][j] = (0..DIM_Z)
                    .map(|l| self.covariance[i][l] * s_inv[l][j])
                    .sum();
            }
        }
        let innovation: Vector4 = std::array::from_fn(|i| z[i] - projected[i]);
        for i in 0..DIM_X {
            self.mean[i] += (0..DIM_Z).map(|j| k[i][j] * innovation[j]).sum::<f64>();
        }
        // P -= K S Kᵀ  (equivalently P -= K H P).
        let mut ks = [[0.0; DIM_Z]; DIM_X];
        for i in 0..DIM_X {
            for j in 0..DIM_Z {
                ks[i][j] = (0..DIM_Z).map(|l| k[i][l] * s[l][j]).sum();
            }
        }
        for i in 0..DIM_X {
            for j in 0..DIM_X {
                self.covariance[i][j] -= (0..DIM_Z).map(|l| ks[i][l] * k[j][l]).sum::<f64>();
            }
        }
        // Keep P symmetric against rounding.
        for i in 0..DIM_X {
            for j in (i + 1)..DIM_X {
                let v = 0.5 * (self.covariance[i][j] + self.covariance[j][i]);
                self.covariance[i][j] = v;
                self.covariance[j][i] = v;
            }
        }
        true
    }
}

/// Gauss–Jordan inverse with partial pivoting; `None` when singular.
pub fn invert4(m: &Matrix4) -> Option<Matrix4> {
    let mut a = *m;
    let mut inv = [[0.0; DIM_Z]; DIM_Z];
    for (i, row) in inv.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    for col in 0..DIM_Z {
        let pivot = (col..DIM_Z).max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs()))?;
        let magnitude = a[pivot][col].abs();
        if magnitude.is_nan() || magnitude <= 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        inv.swap(col, pivot);
        let p = a[col][col];
        for j in 0..DIM_Z {
            a[col][j] /= p;
            inv[col][j] /= p;
        }
        for r in 0..DIM_Z {
            if r != col {
                let f = a[r][col];
                if f != 0.0 {
                    for j in 0..DIM_Z {
                        a[r][j] -= f * a[col][j];
                        inv[r][j] -= f * inv[col][j];
                    }
                }
            }
        }
    }
    Some(inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_of_a_spd_matrix() {
        let m = [
            [4.0, 1.0, 0.0, 0.5],
            [1.0, 3.0, 0.2, 0.0],
            [0.0, 0.2, 2.0, 0.1],
            [0.5, 0.0, 0.1, 1.0],
        ];
        let inv = invert4(&m).unwrap();
        for i in 0..4 {
            for j in 0..4 {
                let v: f64 = (0..4).map(|l| m[i][l] * inv[l][j]).sum();
                assert!(
                    (v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-9,
                    "({i},{j}) = {v}"
                );
            }
        }
        assert!(invert4(&[[0.0; 4]; 4]).is_none());
    }

    #[test]
    fn learns_a_constant_velocity() {
        // A box moving +3 px/frame in x and -1 in y, fixed size.
        let mut kf = KalmanState::initiate([100.0, 100.0, 0.5, 80.0]);
        for t in 1..=30 {
            kf.predict();
            let t = t as f64;
            assert!(kf.update([100.0 + 3.0 * t, 100.0 - t, 0.5, 80.0]));
        }
        assert!((kf.mean[4] - 3.0).abs() < 0.1, "vx {}", kf.mean[4]);
        assert!((kf.mean[5] + 1.0).abs() < 0.1, "vy {}", kf.mean[5]);
        // Ten frames of prediction alone land near the true position.
        for _ in 0..10 {
            kf.predict();
        }
        assert!(
            (kf.mean[0] - (100.0 + 3.0 * 40.0)).abs() < 2.0,
            "cx {}",
            kf.mean[0]
        );
        assert!(
            (kf.mean[1] - (100.0 - 40.0)).abs() < 2.0,
            "cy {}",
            kf.mean[1]
        );
        assert!((kf.mean[3] - 80.0).abs() < 1.0);
    }

    #[test]
    fn uncertainty_grows_when_predicting_and_shrinks_when_measuring() {
        let mut kf = KalmanState::initiate([50.0, 50.0, 1.0, 40.0]);
        let p0 = kf.covariance[0][0];
        kf.predict();
        let p1 = kf.covariance[0][0];
        assert!(p1 > p0);
        kf.update([50.0, 50.0, 1.0, 40.0]);
        assert!(kf.covariance[0][0] < p1);
        // Covariance stays symmetric and positive on the diagonal.
        for i in 0..DIM_X {
            assert!(kf.covariance[i][i] > 0.0);
            for j in 0..DIM_X {
                assert!((kf.covariance[i][j] - kf.covariance[j][i]).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn noisy_measurements_are_smoothed() {
        // Deterministic ±4 px jitter around a straight line.
        let mut kf = KalmanState::initiate([0.0, 0.0, 1.0, 50.0]);
        let mut worst_late = 0.0f64;
        for t in 1..=60 {
            kf.predict();
            let jitter = if t % 2 == 0 { 4.0 } else { -4.0 };
            let truth = 2.0 * t as f64;
            kf.update([truth + jitter, 0.0, 1.0, 50.0]);
            if t > 30 {
                worst_late = worst_late.max((kf.mean[0] - truth).abs());
            }
        }
        assert!(
            worst_late < 4.0,
            "filtered error {worst_late} should be below the jitter"
        );
    }

    #[test]
    fn rejects_non_finite_measurements() {
        let mut kf = KalmanState::initiate([10.0, 10.0, 1.0, 10.0]);
        let before = kf.clone();
        assert!(!kf.update([f64::NAN, 0.0, 1.0, 10.0]));
        assert_eq!(kf, before);
    }
}
