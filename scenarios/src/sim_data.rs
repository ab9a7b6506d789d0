//! The `VolumeData` seam over the simulator's in-process data plane: the simulated database
//! writes into the same copy-on-write trees that the simulator's snapshots capture.

use ontap_sim::error::{ErrorKind, OntapError};
use ontap_sim::Simulator;
use stasis_core::volume_data::{DataError, DataResult, VolumeData};

pub struct SimVolumeData {
    sim: Simulator,
}

impl SimVolumeData {
    pub fn new(sim: Simulator) -> Self {
        SimVolumeData { sim }
    }
}

fn data_error(e: OntapError) -> DataError {
    match e.kind {
        ErrorKind::NotFound => DataError::NotFound(e.message),
        _ if e.code == 524479 => DataError::NoSpace(e.message),
        _ => DataError::Io(e.to_string()),
    }
}

impl VolumeData for SimVolumeData {
    fn read(&self, volume_uuid: &str, path: &str, offset: u64, len: u64) -> DataResult<Vec<u8>> {
        self.sim.read_file(volume_uuid, path, offset, Some(len)).map_err(data_error)
    }

    fn write(&self, volume_uuid: &str, path: &str, offset: u64, data: &[u8]) -> DataResult<()> {
        self.sim.write_file(volume_uuid, path, offset, data).map_err(data_error)
    }

    fn truncate(&self, volume_uuid: &str, path: &str, size: u64) -> DataResult<()> {
        self.sim.truncate_file(volume_uuid, path, size).map_err(data_error)
    }

    fn size(&self, volume_uuid: &str, path: &str) -> DataResult<Option<u64>> {
        self.sim
            .with_volume(volume_uuid, |v| {
                Ok(v.fs.resolve(path).ok().and_then(|ino| v.fs.inode(ino).ok().map(|i| i.size())))
            })
            .map_err(data_error)
    }
}
