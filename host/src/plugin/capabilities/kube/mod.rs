//! `dax:host/kube`: Kubernetes API calls made by the host for a plugin (work in progress:
//! every call is refused until the grant and the client land).

use crate::plugin::bindings::capabilities::dax::host::kube::{
    Host, KindRef, KubeError, ListOptions, PatchBody,
};
use crate::plugin::sandbox::PluginState;

fn not_granted(plugin: &str) -> KubeError {
    KubeError::Denied(format!(
        "plugin `{plugin}` has no Kubernetes grant: add [plugins.{plugin}.grants.kube]"
    ))
}

impl Host for PluginState {
    async fn get(&mut self, _of: KindRef, _name: String) -> Result<String, KubeError> {
        Err(not_granted(&self.plugin))
    }
    async fn get_status(&mut self, _of: KindRef, _name: String) -> Result<String, KubeError> {
        Err(not_granted(&self.plugin))
    }
    async fn list(&mut self, _of: KindRef, _o: ListOptions) -> Result<String, KubeError> {
        Err(not_granted(&self.plugin))
    }
    async fn apply(&mut self, _object: String, _force: bool) -> Result<String, KubeError> {
        Err(not_granted(&self.plugin))
    }
    async fn patch(
        &mut self,
        _of: KindRef,
        _name: String,
        _p: PatchBody,
    ) -> Result<String, KubeError> {
        Err(not_granted(&self.plugin))
    }
    async fn delete(&mut self, _of: KindRef, _name: String) -> Result<bool, KubeError> {
        Err(not_granted(&self.plugin))
    }
}
