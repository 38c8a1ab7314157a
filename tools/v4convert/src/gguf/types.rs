//! The ggml tensor type table (ids 0-41) and the GGUF metadata value types.

use std::fmt;

/// A ggml tensor type as stored in a GGUF tensor info (`ggml_type`).
///
/// Every id from 0 to 41 is listed. The ids ggml removed (the old `Q4_2`/`Q4_3` and the
/// `Q4_0_x_y`/`IQ4_NL_x_y` runtime repacks) are kept as variants so that a file naming them gets a
/// precise error, but they have no block layout and cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q4_2Removed,
    Q4_3Removed,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
    Iq2Xxs,
    Iq2Xs,
    Iq3Xxs,
    Iq1S,
    Iq4Nl,
    Iq3S,
    Iq2S,
    Iq4Xs,
    I8,
    I16,
    I32,
    I64,
    F64,
    Iq1M,
    Bf16,
    Q4_0_4_4Removed,
    Q4_0_4_8Removed,
    Q4_0_8_8Removed,
    Tq1_0,
    Tq2_0,
    Iq4Nl4_4Removed,
    Iq4Nl4_8Removed,
    Iq4Nl8_8Removed,
    Mxfp4,
    Nvfp4,
    Q1_0,
}

/// Elements per super-block of the k-quants.
const QK_K: u64 = 256;

/// `(id, type, name, block size in elements, bytes per block)`; removed ids have size 0.
const TABLE: [(u32, GgmlType, &str, u64, u64); 42] = {
    use GgmlType as T;
    [
        (0, T::F32, "F32", 1, 4),
        (1, T::F16, "F16", 1, 2),
        (2, T::Q4_0, "Q4_0", 32, 2 + 16),
        (3, T::Q4_1, "Q4_1", 32, 2 + 2 + 16),
        (4, T::Q4_2Removed, "Q4_2", 0, 0),
        (5, T::Q4_3Removed, "Q4_3", 0, 0),
        (6, T::Q5_0, "Q5_0", 32, 2 + 4 + 16),
        (7, T::Q5_1, "Q5_1", 32, 2 + 2 + 4 + 16),
        (8, T::Q8_0, "Q8_0", 32, 2 + 32),
        (9, T::Q8_1, "Q8_1", 32, 4 + 4 + 32),
        (10, T::Q2K, "Q2_K", QK_K, 2 + 2 + QK_K / 16 + QK_K / 4),
        (11, T::Q3K, "Q3_K", QK_K, 2 + QK_K / 4 + QK_K / 8 + 12),
        (12, T::Q4K, "Q4_K", QK_K, 2 + 2 + QK_K / 2 + 12),
        (13, T::Q5K, "Q5_K", QK_K, 2 + 2 + QK_K / 2 + QK_K / 8 + 12),
        (
            14,
            T::Q6K,
            "Q6_K",
            QK_K,
            2 + QK_K / 2 + QK_K / 4 + QK_K / 16,
        ),
        (15, T::Q8K, "Q8_K", QK_K, 4 + QK_K + QK_K / 8),
        (16, T::Iq2Xxs, "IQ2_XXS", QK_K, 2 + QK_K / 4),
        (17, T::Iq2Xs, "IQ2_XS", QK_K, 2 + QK_K / 4 + QK_K / 32),
        (18, T::Iq3Xxs, "IQ3_XXS", QK_K, 2 + QK_K / 4 + QK_K / 8),
        (19, T::Iq1S, "IQ1_S", QK_K, 2 + QK_K / 8 + QK_K / 16),
        (20, T::Iq4Nl, "IQ4_NL", 32, 2 + 16),
        (
            21,
            T::Iq3S,
            "IQ3_S",
            QK_K,
            2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4,
        ),
        (22, T::Iq2S, "IQ2_S", QK_K, 2 + QK_K / 4 + QK_K / 16),
        (23, T::Iq4Xs, "IQ4_XS", QK_K, 2 + 2 + QK_K / 2 + QK_K / 64),
        (24, T::I8, "I8", 1, 1),
        (25, T::I16, "I16", 1, 2),
        (26, T::I32, "I32", 1, 4),
        (27, T::I64, "I64", 1, 8),
        (28, T::F64, "F64", 1, 8),
        (29, T::Iq1M, "IQ1_M", QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32),
        (30, T::Bf16, "BF16", 1, 2),
        (31, T::Q4_0_4_4Removed, "Q4_0_4_4", 0, 0),
        (32, T::Q4_0_4_8Removed, "Q4_0_4_8", 0, 0),
        (33, T::Q4_0_8_8Removed, "Q4_0_8_8", 0, 0),
        (34, T::Tq1_0, "TQ1_0", QK_K, 2 + 4 * 13),
        (35, T::Tq2_0, "TQ2_0", QK_K, 2 + 64),
        (36, T::Iq4Nl4_4Removed, "IQ4_NL_4_4", 0, 0),
        (37, T::Iq4Nl4_8Removed, "IQ4_NL_4_8", 0, 0),
        (38, T::Iq4Nl8_8Removed, "IQ4_NL_8_8", 0, 0),
        (39, T::Mxfp4, "MXFP4", 32, 1 + 16),
        (40, T::Nvfp4, "NVFP4", 64, 4 + 32),
        (41, T::Q1_0, "Q1_0", 128, 2 + 16),
    ]
};

impl GgmlType {
    /// The type with this id, or `None` for ids above 41.
    pub fn from_id(id: u32) -> Option<Self> {
        TABLE.get(id as usize).map(|e| e.1)
    }

    fn entry(self) -> &'static (u32, GgmlType, &'static str, u64, u64) {
        // Variants are declared in id order, so the discriminant is the table index.
        &TABLE[self as usize]
    }

    pub fn id(self) -> u32 {
        self.entry().0
    }

    /// ggml's spelling (`Q8_0`, `MXFP4`, ...).
    pub fn name(self) -> &'static str {
        self.entry().2
    }

    /// Whether ggml removed this id from GGUF files (no layout; files naming it are refused).
    pub fn is_removed(self) -> bool {
        self.entry().3 == 0
    }

    /// Elements per block (1 for the plain types); 0 for removed ids.
    pub fn block_size(self) -> u64 {
        self.entry().3
    }

    /// Bytes per block; 0 for removed ids.
    pub fn type_size(self) -> u64 {
        self.entry().4
    }

    /// Bytes of a tensor with `ne0` elements per row and `n` elements in all, or `None` when `ne0`
    /// is not a multiple of the block size, the type was removed, or the size overflows.
    pub fn nbytes(self, ne0: u64, n: u64) -> Option<u64> {
        let bs = self.block_size();
        if bs == 0 || !ne0.is_multiple_of(bs) || !n.is_multiple_of(bs) {
            return None;
        }
        (n / bs).checked_mul(self.type_size())
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `general.file_type` values (`llama_ftype`) that this converter writes.
pub mod file_type {
    pub const ALL_F32: u32 = 0;
    pub const MOSTLY_Q8_0: u32 = 7;
    /// What llama.cpp's converter stamps on every `deepseek4` file.
    pub const MOSTLY_MXFP4_MOE: u32 = 38;
}

/// The type tag of a GGUF metadata value (`gguf_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgufValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl GgufValueType {
    pub fn from_id(id: u32) -> Option<Self> {
        use GgufValueType as V;
        Some(match id {
            0 => V::U8,
            1 => V::I8,
            2 => V::U16,
            3 => V::I16,
            4 => V::U32,
            5 => V::I32,
            6 => V::F32,
            7 => V::Bool,
            8 => V::String,
            9 => V::Array,
            10 => V::U64,
            11 => V::I64,
            12 => V::F64,
            _ => return None,
        })
    }

    pub fn id(self) -> u32 {
        self as u32
    }

    /// gguf-py's spelling (`UINT32`, `FLOAT32`, `STRING`, ...).
    pub fn name(self) -> &'static str {
        use GgufValueType as V;
        match self {
            V::U8 => "UINT8",
            V::I8 => "INT8",
            V::U16 => "UINT16",
            V::I16 => "INT16",
            V::U32 => "UINT32",
            V::I32 => "INT32",
            V::F32 => "FLOAT32",
            V::Bool => "BOOL",
            V::String => "STRING",
            V::Array => "ARRAY",
            V::U64 => "UINT64",
            V::I64 => "INT64",
            V::F64 => "FLOAT64",
        }
    }
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    U64(u64),
    I64(i64),
    F64(f64),
    /// A homogeneous array: every element has type `elem` (nested arrays are allowed by the
    /// format; each inner array carries its own element type).
    Array {
        elem: GgufValueType,
        values: Vec<GgufValue>,
    },
}

impl GgufValue {
    pub fn value_type(&self) -> GgufValueType {
        use GgufValueType as V;
        match self {
            GgufValue::U8(_) => V::U8,
            GgufValue::I8(_) => V::I8,
            GgufValue::U16(_) => V::U16,
            GgufValue::I16(_) => V::I16,
            GgufValue::U32(_) => V::U32,
            GgufValue::I32(_) => V::I32,
            GgufValue::F32(_) => V::F32,
            GgufValue::Bool(_) => V::Bool,
            GgufValue::String(_) => V::String,
            GgufValue::U64(_) => V::U64,
            GgufValue::I64(_) => V::I64,
            GgufValue::F64(_) => V::F64,
            GgufValue::Array { .. } => V::Array,
        }
    }

    /// An array of strings.
    pub fn strings<I: IntoIterator<Item = String>>(items: I) -> Self {
        GgufValue::Array {
            elem: GgufValueType::String,
            values: items.into_iter().map(GgufValue::String).collect(),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// Any unsigned or non-negative signed integer as `u64`.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_indexed_by_id() {
        for (i, e) in TABLE.iter().enumerate() {
            assert_eq!(e.0 as usize, i);
            assert_eq!(e.1 as usize, i);
            assert_eq!(GgmlType::from_id(i as u32), Some(e.1));
            assert_eq!(e.1.id() as usize, i);
        }
        assert_eq!(GgmlType::from_id(42), None);
        assert_eq!(GgmlType::Q8_0.nbytes(64, 128), Some(4 * 34));
        assert_eq!(GgmlType::Q8_0.nbytes(48, 96), None);
        assert_eq!(GgmlType::Q4_2Removed.nbytes(32, 32), None);
        assert_eq!(GgmlType::Mxfp4.type_size(), 17);
    }
}
