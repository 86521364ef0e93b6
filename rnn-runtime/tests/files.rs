//! `TensorMap::load` and `TensorMap::save` against real files, in Cargo's scratch directory for
//! integration tests (inside the target directory, so nothing outside the repository is touched).

use std::fs;
use std::path::PathBuf;

use ndarray::{arr1, arr2};
use rnn_runtime::{RnnError, TensorMap};

/// A fresh path for `file_name` in this test binary's scratch directory.
fn scratch_path(file_name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("rnn-runtime-files");
    fs::create_dir_all(&dir).expect("the scratch directory can be created");
    let path = dir.join(file_name);
    let _ = fs::remove_file(&path);
    path
}

fn sample_map() -> TensorMap {
    let mut map = TensorMap::new();
    map.insert_f32("weight_hh_l0", arr2(&[[0.5, -1.25], [3.0, 0.0]]).into_dyn());
    map.insert_i64("seq_len", arr1(&[2, 1]).into_dyn());
    map
}

#[test]
fn save_then_load_round_trips() {
    let path = scratch_path("round_trip.safetensors");
    let map = sample_map();
    map.save(&path).unwrap();
    let loaded = TensorMap::load(&path).unwrap();
    assert_eq!(loaded, map);
    assert_eq!(fs::read(&path).unwrap(), map.to_bytes().unwrap());
}

#[test]
fn loading_a_missing_file_is_an_io_error_naming_it() {
    let path = scratch_path("does_not_exist.safetensors");
    let error = TensorMap::load(&path).unwrap_err();
    let RnnError::Io {
        path: reported,
        source,
    } = &error
    else {
        panic!("expected Io, got {error:?}");
    };
    assert_eq!(reported, &path.display().to_string());
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    assert!(error.to_string().contains("does_not_exist.safetensors"));
}

#[test]
fn loading_a_truncated_file_is_a_bad_file_naming_it() {
    let path = scratch_path("truncated.safetensors");
    let bytes = sample_map().to_bytes().unwrap();
    fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
    let error = TensorMap::load(&path).unwrap_err();
    let RnnError::BadFile { path: reported, .. } = &error else {
        panic!("expected BadFile, got {error:?}");
    };
    assert_eq!(reported, &path.display().to_string());
}

#[test]
fn saving_into_a_missing_directory_is_an_io_error() {
    let path = scratch_path("no_such_dir").join("weights.safetensors");
    let error = sample_map().save(&path).unwrap_err();
    assert!(
        matches!(&error, RnnError::Io { path: reported, .. } if *reported == path.display().to_string()),
        "{error:?}"
    );
}
