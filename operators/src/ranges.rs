//! Range checks of settings, written once for every settings type of the crate.
//!
//! Each check fails with [`Error::Field`], whose message names the setting, its value and
//! what was expected, in one style (`` `dim` is 0 (expected at least 1) ``), so a caller
//! that read the setting from a file can point at it and print the message unchanged.

use crate::{Error, Result};

/// A range error of setting `field`.
pub fn field_error(field: &str, message: impl Into<String>) -> Error {
    Error::Field {
        field: field.to_string(),
        message: message.into(),
    }
}

/// `value >= min`.
pub fn at_least(field: &str, value: usize, min: usize) -> Result<()> {
    match value >= min {
        true => Ok(()),
        false => Err(field_error(
            field,
            format!("`{field}` is {value} (expected at least {min})"),
        )),
    }
}

/// `value <= max`.
pub fn at_most(field: &str, value: usize, max: usize) -> Result<()> {
    match value <= max {
        true => Ok(()),
        false => Err(field_error(
            field,
            format!("`{field}` is {value} (expected at most {max})"),
        )),
    }
}

/// `min <= value <= max`.
pub fn within(field: &str, value: usize, min: usize, max: usize) -> Result<()> {
    at_least(field, value, min)?;
    at_most(field, value, max)
}

/// A finite `value >= 0`.
pub fn finite_non_negative(field: &str, value: f64) -> Result<()> {
    match value.is_finite() && value >= 0.0 {
        true => Ok(()),
        false => Err(field_error(
            field,
            format!("`{field}` is {value} (expected a finite number >= 0)"),
        )),
    }
}

/// A finite `value > 0`.
pub fn finite_positive(field: &str, value: f64) -> Result<()> {
    match value.is_finite() && value > 0.0 {
        true => Ok(()),
        false => Err(field_error(
            field,
            format!("`{field}` is {value} (expected a finite number > 0)"),
        )),
    }
}

/// A finite `value`.
pub fn finite(field: &str, value: f64) -> Result<()> {
    match value.is_finite() {
        true => Ok(()),
        false => Err(field_error(
            field,
            format!("`{field}` is {value} (expected a finite number)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_field_the_value_and_the_range() {
        let e = at_least("dim", 0, 1).unwrap_err();
        assert_eq!(e.to_string(), "`dim` is 0 (expected at least 1)");
        assert!(matches!(e, Error::Field { ref field, .. } if field == "dim"));
        assert!(within("width", 70_000, 1, 65_536)
            .unwrap_err()
            .to_string()
            .contains("expected at most 65536"));
        assert!(finite_positive("beta", 0.0).is_err());
        assert!(finite_non_negative("lr", f64::NAN).is_err());
        assert!(finite("margin", 0.5).is_ok());
        assert!(at_most("buckets", 5, u32::MAX as usize).is_ok());
    }
}
