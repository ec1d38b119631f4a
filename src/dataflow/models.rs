//! The models of `models:` at run time: one instance per worker, and the forwards each
//! worker keeps for its backward.
//!
//! Each worker has its own replica of every model, updated identically from all-reduced
//! gradients; [`ProcessModels`] builds them once per process (before the workers start)
//! and each worker takes its own ([`WorkerModels::take`]). The tape is where an `encode`
//! or `correct` node leaves the forward pass it computed at step `t` (with its autograd
//! graph) until `update` turns the loss's gradients of those values into gradients of the
//! weights.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Mutex;

use candle_core::Device;
use freshen_operators::corrector::Corrector;
use freshen_operators::reader::Reader;
use freshen_operators::train::{Recorded, Trainable, TrainableEncoder};

use super::checkpoint::Checkpointable;
use super::streams::Time;
use crate::error::{Error, Result};
use crate::models::Built;

/// Per model, one instance per worker of this process, taken by each worker as it builds
/// its dataflow; and each encoder's fingerprint and width (the same for every replica).
pub struct ProcessModels {
    slots: BTreeMap<String, Mutex<Vec<Option<Built>>>>,
    encoders: BTreeMap<String, (String, usize)>,
}

impl ProcessModels {
    /// The first instance of each model with `workers - 1` replicas. `restore` may set a
    /// model's weights (a resumed run's) before it is replicated; the encoders'
    /// fingerprints are those of the weights as built, which key their starting cache.
    pub fn new(
        built: BTreeMap<String, Built>,
        workers: usize,
        restore: &dyn Fn(&str, &Built) -> Result<()>,
    ) -> Result<Self> {
        let mut slots = BTreeMap::new();
        let mut encoders = BTreeMap::new();
        for (name, first) in built {
            if let Built::Encoder(e) = &first {
                encoders.insert(name.clone(), (e.fingerprint().to_string(), e.dim()));
            }
            restore(&name, &first)?;
            let mut instances = Vec::with_capacity(workers.max(1));
            for _ in 1..workers.max(1) {
                instances.push(Some(match &first {
                    Built::Encoder(e) => Built::Encoder(e.replica()?),
                    Built::Corrector(c) => Built::Corrector(c.replica()?),
                    Built::Reader(r) => Built::Reader(r.replica()?),
                }));
            }
            instances.insert(0, Some(first));
            slots.insert(name, Mutex::new(instances));
        }
        Ok(Self { slots, encoders })
    }

    /// The fingerprint and width of encoder `name`.
    pub fn encoder(&self, name: &str) -> Option<&(String, usize)> {
        self.encoders.get(name)
    }

    /// Names of the models.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.slots.keys()
    }

    /// Whether there is no model.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn take(&self, name: &str, local: usize) -> Result<Built> {
        let slot = self
            .slots
            .get(name)
            .ok_or_else(|| Error::invariant(format!("no model named `{name}`")))?;
        let mut instances = slot
            .lock()
            .map_err(|_| Error::invariant("model lock poisoned"))?;
        instances
            .get_mut(local)
            .and_then(Option::take)
            .ok_or_else(|| {
                Error::invariant(format!(
                    "model `{name}` of worker {local} was already taken"
                ))
            })
    }
}

/// A forward pass kept until `update` has its gradients.
pub struct TapeEntry {
    /// The model that computed it.
    pub model: String,
    /// The id of each output row.
    pub ids: Vec<String>,
    /// The output and its graph.
    pub recorded: Recorded,
}

/// One worker's models and the records of its steps in flight.
pub struct WorkerModels {
    /// Text encoders of `models:`, by name.
    pub encoders: BTreeMap<String, Rc<dyn TrainableEncoder>>,
    /// Correctors of `models:`, by name.
    pub correctors: BTreeMap<String, Rc<Corrector>>,
    /// Readers of `models:`, by name.
    pub readers: BTreeMap<String, Rc<Reader>>,
    tape: RefCell<HashMap<(String, Time), Vec<TapeEntry>>>,
    touched: RefCell<BTreeMap<Time, u64>>,
    states: RefCell<BTreeMap<String, Rc<dyn Checkpointable>>>,
}

impl WorkerModels {
    /// Takes this worker's instance of every model (`local` is the worker's index within
    /// its process).
    pub fn take(models: &ProcessModels, local: usize) -> Result<Self> {
        let mut state = WorkerModels {
            encoders: BTreeMap::new(),
            correctors: BTreeMap::new(),
            readers: BTreeMap::new(),
            tape: RefCell::new(HashMap::new()),
            touched: RefCell::new(BTreeMap::new()),
            states: RefCell::new(BTreeMap::new()),
        };
        for name in models.names() {
            match models.take(name, local)? {
                Built::Encoder(e) => {
                    state.encoders.insert(name.clone(), Rc::from(e));
                }
                Built::Corrector(c) => {
                    state.correctors.insert(name.clone(), Rc::new(c));
                }
                Built::Reader(r) => {
                    state.readers.insert(name.clone(), Rc::new(r));
                }
            }
        }
        Ok(state)
    }

    /// The encoder named `name`.
    pub fn encoder(&self, name: &str) -> Result<Rc<dyn TrainableEncoder>> {
        self.encoders
            .get(name)
            .cloned()
            .ok_or_else(|| Error::invariant(format!("no encoder named `{name}` on this worker")))
    }

    /// The corrector named `name`.
    pub fn corrector(&self, name: &str) -> Result<Rc<Corrector>> {
        self.correctors
            .get(name)
            .cloned()
            .ok_or_else(|| Error::invariant(format!("no corrector named `{name}` on this worker")))
    }

    /// The reader named `name`.
    pub fn reader(&self, name: &str) -> Result<Rc<Reader>> {
        self.readers
            .get(name)
            .cloned()
            .ok_or_else(|| Error::invariant(format!("no reader named `{name}` on this worker")))
    }

    /// The model named `name`, whatever its kind, as something that trains.
    pub fn trainable(&self, name: &str) -> Result<Rc<dyn Trainable>> {
        if let Some(e) = self.encoders.get(name) {
            return Ok(e.clone());
        }
        if let Some(h) = self.correctors.get(name) {
            return Ok(h.clone());
        }
        Ok(self.reader(name)?)
    }

    /// The device of model `name`'s weights (the CPU for a model without any).
    pub fn device_of(&self, name: &str) -> Result<Device> {
        Ok(self
            .trainable(name)?
            .params()
            .first()
            .map(|(_, v)| v.device().clone())
            .unwrap_or_else(freshen_operators::device::cpu))
    }

    /// Writes model `name` into the folder `dir` as its kind saves it (an encoder its
    /// checkpoint layout, a corrector or a reader `<name>.safetensors`); returns the path.
    pub fn save_model(&self, name: &str, dir: &std::path::Path) -> Result<std::path::PathBuf> {
        if let Some(e) = self.encoders.get(name) {
            return Ok(e.save_checkpoint(dir, name)?);
        }
        let path = dir.join(format!("{name}.safetensors"));
        match self.correctors.get(name) {
            Some(h) => h.save(&path)?,
            None => self.reader(name)?.save(&path)?,
        }
        Ok(path)
    }

    /// Keeps the forward that `node` computed at step `t`.
    pub fn record(&self, node: &str, t: Time, entry: TapeEntry) {
        self.tape
            .borrow_mut()
            .entry((node.to_string(), t))
            .or_default()
            .push(entry);
    }

    /// Takes every forward that `node` computed at step `t`.
    pub fn take_tape(&self, node: &str, t: Time) -> Vec<TapeEntry> {
        self.tape
            .borrow_mut()
            .remove(&(node.to_string(), t))
            .unwrap_or_default()
    }

    /// Counts target-encoder forwards of touched targets at step `t`.
    pub fn count_touched(&self, t: Time, n: u64) {
        *self.touched.borrow_mut().entry(t).or_default() += n;
    }

    /// Registers the state node `node` carries across steps, for checkpoints.
    pub fn register_state(&self, node: &str, state: Rc<dyn Checkpointable>) {
        self.states.borrow_mut().insert(node.to_string(), state);
    }

    /// The registered states, by node.
    pub fn states(&self) -> Vec<(String, Rc<dyn Checkpointable>)> {
        self.states
            .borrow()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Takes the count of touched forwards of step `t`.
    pub fn take_touched(&self, t: Time) -> u64 {
        self.touched.borrow_mut().remove(&t).unwrap_or(0)
    }
}
