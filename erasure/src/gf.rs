//! GF(2^8) matrix algebra and the one slice kernel every encode, decode and rebuild runs.
//!
//! The code is reed-solomon-erasure 6's `galois_8::ReedSolomon`: the same field (generator
//! polynomial 0x11d), the same encoding matrix (a (k+m) x k Vandermonde matrix with row r
//! = [r^0, r^1, ..], times the inverse of its top k x k square, so that the top is the
//! identity and the code is systematic) and the same SIMD multiply kernels. Parity on disk
//! is therefore exactly what that crate's `encode` writes; a test checks the matrix against
//! its output for every scheme. The matrix is computed here rather than taken from
//! `ReedSolomon` because that type keeps it private, and degraded reads need its rows.

use reed_solomon_erasure::galois_8;

use crate::Scheme;

/// A dense row-major matrix over GF(2^8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Matrix {
    rows: usize,
    cols: usize,
    cells: Vec<u8>,
}

impl Matrix {
    fn zero(rows: usize, cols: usize) -> Self {
        Matrix { rows, cols, cells: vec![0; rows * cols] }
    }

    fn identity(n: usize) -> Self {
        let mut m = Matrix::zero(n, n);
        for i in 0..n {
            m.cells[i * n + i] = 1;
        }
        m
    }

    /// Row `r` as a slice of `cols` coefficients.
    pub(crate) fn row(&self, r: usize) -> &[u8] {
        &self.cells[r * self.cols..(r + 1) * self.cols]
    }

    /// All cells, row after row: the flat form [`combine`] takes.
    pub(crate) fn cells(&self) -> &[u8] {
        &self.cells
    }

    /// The matrix made of the given rows, in the given order.
    pub(crate) fn select_rows(&self, rows: &[usize]) -> Matrix {
        let mut cells = Vec::with_capacity(rows.len() * self.cols);
        for &r in rows {
            cells.extend_from_slice(self.row(r));
        }
        Matrix { rows: rows.len(), cols: self.cols, cells }
    }

    fn multiply(&self, rhs: &Matrix) -> Matrix {
        assert_eq!(self.cols, rhs.rows, "matrix shapes do not chain");
        let mut out = Matrix::zero(self.rows, rhs.cols);
        for r in 0..self.rows {
            for c in 0..rhs.cols {
                let mut acc = 0u8;
                for i in 0..self.cols {
                    acc ^= galois_8::mul(self.cells[r * self.cols + i], rhs.cells[i * rhs.cols + c]);
                }
                out.cells[r * rhs.cols + c] = acc;
            }
        }
        out
    }

    /// The inverse of a square matrix by Gauss-Jordan elimination; `None` when singular.
    fn invert(&self) -> Option<Matrix> {
        assert_eq!(self.rows, self.cols, "only square matrices invert");
        let n = self.rows;
        let mut work = self.clone();
        let mut inv = Matrix::identity(n);
        for col in 0..n {
            let pivot = (col..n).find(|&r| work.cells[r * n + col] != 0)?;
            if pivot != col {
                for c in 0..n {
                    work.cells.swap(pivot * n + c, col * n + c);
                    inv.cells.swap(pivot * n + c, col * n + c);
                }
            }
            let scale = galois_8::div(1, work.cells[col * n + col]);
            for c in 0..n {
                work.cells[col * n + c] = galois_8::mul(work.cells[col * n + c], scale);
                inv.cells[col * n + c] = galois_8::mul(inv.cells[col * n + c], scale);
            }
            for r in 0..n {
                let factor = work.cells[r * n + col];
                if r == col || factor == 0 {
                    continue;
                }
                for c in 0..n {
                    work.cells[r * n + c] ^= galois_8::mul(factor, work.cells[col * n + c]);
                    inv.cells[r * n + c] ^= galois_8::mul(factor, inv.cells[col * n + c]);
                }
            }
        }
        Some(inv)
    }
}

/// The (k+m) x k encoding matrix of `scheme`: fragment f = row f times the k data
/// fragments. Rows `0..k` are the identity, rows `k..k+m` the parity coefficients.
pub(crate) fn encoding_matrix(scheme: Scheme) -> Matrix {
    let (k, n) = (scheme.data_count(), scheme.fragment_count());
    let mut vandermonde = Matrix::zero(n, k);
    for r in 0..n {
        for c in 0..k {
            // r < FRAGMENTS_MAX <= 256, so the row's evaluation point fits a field element.
            vandermonde.cells[r * k + c] = galois_8::exp(r as u8, c);
        }
    }
    let top: Vec<usize> = (0..k).collect();
    let top_inverse = vandermonde
        .select_rows(&top)
        .invert()
        .expect("a Vandermonde matrix with distinct points is invertible");
    vandermonde.multiply(&top_inverse)
}

/// Coefficients that express each of `targets` as a combination of the k `survivors`
/// (distinct fragment indices), given the scheme's [`encoding_matrix`]: row t of the
/// result applied to the survivors, in the given order, yields fragment `targets[t]`.
/// Costs one k x k inversion.
pub(crate) fn decode_matrix(encoding: &Matrix, survivors: &[usize], targets: &[usize]) -> Matrix {
    assert_eq!(survivors.len(), encoding.cols, "decoding takes exactly k survivors");
    // Survivors = S * data, so data = S^-1 * survivors and target = E[t] * S^-1 * survivors.
    let survivors_inverse = encoding
        .select_rows(survivors)
        .invert()
        .expect("any k rows of an MDS encoding matrix are independent");
    encoding.select_rows(targets).multiply(&survivors_inverse)
}

/// `outputs[j] = sum over i of coefficients[j * k + i] * inputs[i]` byte by byte, where k =
/// `inputs.len()`. Every input and output must have the same length (callers check; this
/// asserts).
///
/// The loop order is reed-solomon-erasure's own (each input multiplied into every output
/// in turn, whole slices per kernel call), so encoding costs what the raw crate costs.
/// Column blocking (8 KiB to 256 KiB) was measured and made no reliable difference: the
/// SIMD multiply, not cache traffic, is the bound.
pub(crate) fn combine<I: AsRef<[u8]>, O: AsMut<[u8]>>(coefficients: &[u8], inputs: &[I], outputs: &mut [O]) {
    let k = inputs.len();
    assert_eq!(coefficients.len(), k * outputs.len(), "one coefficient per input and output");
    let Some(first) = inputs.first() else { return };
    let len = first.as_ref().len();
    for output in outputs.iter_mut() {
        assert_eq!(output.as_mut().len(), len, "outputs differ from inputs in length");
    }
    if len == 0 {
        // The SIMD kernels index the first byte of their slices.
        return;
    }
    for (i, input) in inputs.iter().enumerate() {
        let input = input.as_ref();
        assert_eq!(input.len(), len, "inputs differ in length");
        for (j, output) in outputs.iter_mut().enumerate() {
            let c = coefficients[j * k + i];
            if i == 0 {
                galois_8::mul_slice(c, input, output.as_mut());
            } else if c != 0 {
                galois_8::mul_slice_xor(c, input, output.as_mut());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use reed_solomon_erasure::galois_8::ReedSolomon;

    use super::*;
    use crate::FRAGMENTS_MAX;

    /// Parity coefficients as reed-solomon-erasure computes them: encoding a unit vector
    /// (data shard i = [1], the others [0]) yields column i of the parity rows.
    fn library_parity_rows(scheme: Scheme) -> Vec<Vec<u8>> {
        let (k, m) = (scheme.data_count(), scheme.parity_count());
        let rs = ReedSolomon::new(k, m).expect("valid scheme");
        let columns: Vec<Vec<u8>> = (0..k)
            .map(|i| {
                let data: Vec<Vec<u8>> = (0..k).map(|d| vec![u8::from(d == i)]).collect();
                let mut parity = vec![vec![0u8; 1]; m];
                rs.encode_sep(&data, &mut parity).expect("encode");
                parity.iter().map(|p| p[0]).collect()
            })
            .collect();
        (0..m).map(|j| columns.iter().map(|column| column[j]).collect()).collect()
    }

    #[test]
    fn encoding_matrix_matches_reed_solomon_erasure_for_every_scheme() {
        for k in 1..FRAGMENTS_MAX {
            for m in 1..=FRAGMENTS_MAX - k {
                let scheme = Scheme::new(k as u8, m as u8).expect("valid");
                let matrix = encoding_matrix(scheme);
                for r in 0..k {
                    let unit: Vec<u8> = (0..k).map(|c| u8::from(c == r)).collect();
                    assert_eq!(matrix.row(r), unit.as_slice(), "{scheme} data row {r}");
                }
                for (j, row) in library_parity_rows(scheme).iter().enumerate() {
                    assert_eq!(matrix.row(k + j), row.as_slice(), "{scheme} parity row {j}");
                }
            }
        }
    }

    #[test]
    fn decode_matrix_inverts_any_survivor_choice() {
        let scheme = Scheme::RS_6_3;
        let encoding = encoding_matrix(scheme);
        // Survivors: 0, 2, 4 (data) and 6, 7, 8 (parity); rebuild data 1, 3, 5.
        let survivors = [0, 2, 4, 6, 7, 8];
        let decode = decode_matrix(&encoding, &survivors, &[1, 3, 5]);
        let back = decode.multiply(&encoding.select_rows(&survivors));
        assert_eq!(back, encoding.select_rows(&[1, 3, 5]));
    }

    #[test]
    fn combine_matches_library_encode() {
        let scheme = Scheme::RS_10_4;
        let len = 3 * 8192 + 77;
        let data: Vec<Vec<u8>> =
            (0..10).map(|d| (0..len).map(|x| (x * 31 + d * 7 + x / 253) as u8).collect()).collect();
        let mut expected = vec![vec![0u8; len]; 4];
        ReedSolomon::new(10, 4).expect("valid").encode_sep(&data, &mut expected).expect("encode");
        let parity_rows = encoding_matrix(scheme).select_rows(&[10, 11, 12, 13]);
        let mut got = vec![vec![0xAAu8; len]; 4];
        combine(parity_rows.cells(), &data, &mut got);
        assert_eq!(got, expected);
    }
}
