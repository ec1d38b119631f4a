//! The weights: saving and loading them, and training them through `forward`.

use super::*;

#[test]
fn save_load_round_trip() {
    let ts = texts(6, 40, 25);
    let refs: Vec<&str> = ts.iter().map(String::as_str).collect();
    let a = HashedEncoder::new(small(11), &crate::device::cpu()).unwrap();
    let path = tmp_path("round-trip.safetensors");
    a.save(&path).unwrap();
    // Another seed: different weights until loaded.
    let mut b = HashedEncoder::new(small(12), &crate::device::cpu()).unwrap();
    assert_ne!(a.fingerprint(), b.fingerprint());
    b.load_weights(&path).unwrap();
    assert_eq!(a.fingerprint(), b.fingerprint());
    let (va, vb) = (
        rows(&a.encode(&refs).unwrap()),
        rows(&b.encode(&refs).unwrap()),
    );
    for (x, y) in va.iter().zip(&vb) {
        assert_eq!(bits(x), bits(y));
    }
    // The file also works with a plain VarMap load (the names are the VarMap's).
    let mut c = HashedEncoder::new(small(13), &crate::device::cpu()).unwrap();
    c.varmap.clone().load(&path).unwrap();
    c.refresh_fingerprint().unwrap();
    assert_eq!(c.fingerprint(), a.fingerprint());

    // A different featurisation is refused and leaves the encoder untouched.
    let mut d = HashedEncoder::new(
        HashedEncoderConfig {
            char_ngrams: (2, 4),
            ..small(11)
        },
        &crate::device::cpu(),
    )
    .unwrap();
    let before = d.fingerprint().to_string();
    match d.load_weights(&path) {
        Err(Error::ModelFile { path: p, message }) => {
            assert_eq!(p, path);
            assert!(message.contains("char_ngrams"), "{message}");
        }
        other => panic!("expected a model file error, got {other:?}"),
    }
    assert_eq!(d.fingerprint(), before);
    // So is a different shape, and a missing file.
    let mut e = HashedEncoder::new(
        HashedEncoderConfig {
            dim: 8,
            ..small(11)
        },
        &crate::device::cpu(),
    )
    .unwrap();
    assert!(matches!(
        e.load_weights(&path),
        Err(Error::ModelFile { .. })
    ));
    let missing = tmp_path("missing.safetensors");
    assert!(matches!(
        b.load_weights(&missing),
        Err(Error::ModelFile { .. })
    ));
    std::fs::remove_file(&path).unwrap();
    let _ = std::fs::remove_dir(path.parent().unwrap());
}

#[test]
fn forward_is_differentiable_and_refresh_tracks_weights() {
    let ts = texts(7, 70, 20);
    let mut refs: Vec<&str> = ts.iter().map(String::as_str).collect();
    refs.push("");
    let mut enc = HashedEncoder::new(small(3), &crate::device::cpu()).unwrap();
    let out = enc.forward(&refs).unwrap();
    let target = Tensor::from_vec(
        (0..refs.len() * 16)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) / 5.0)
            .collect::<Vec<_>>(),
        (refs.len(), 16),
        &crate::device::cpu(),
    )
    .unwrap();
    let loss = (out - &target).unwrap().sqr().unwrap().mean_all().unwrap();
    let grads = loss.backward().unwrap();
    let vars = enc.varmap().all_vars();
    assert_eq!(vars.len(), 3);
    for var in &vars {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for a var of shape {:?}", var.dims()));
        let g: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
        assert!(g.iter().all(|x| x.is_finite()));
        assert!(
            g.iter().any(|&x| x != 0.0),
            "all-zero gradient for shape {:?}",
            var.dims()
        );
    }
    // A small gradient step lowers the loss, and the refreshed fingerprint follows the weights.
    let before = enc.fingerprint().to_string();
    for var in &vars {
        let g = grads.get(var.as_tensor()).unwrap();
        var.set(&(var.as_tensor() - (g * 0.5).unwrap()).unwrap())
            .unwrap();
    }
    let loss2 = (enc.forward(&refs).unwrap() - &target)
        .unwrap()
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap();
    assert!(loss2.to_scalar::<f32>().unwrap() < loss.to_scalar::<f32>().unwrap());
    assert_eq!(enc.fingerprint(), before);
    enc.refresh_fingerprint().unwrap();
    assert_ne!(enc.fingerprint(), before);
}
