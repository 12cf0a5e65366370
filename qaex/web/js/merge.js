// RFC 7386 JSON merge patches, applied in place, as DIFF clients apply rtn_data (DIFF.md "Merge
// semantics"): objects merge recursively, null deletes the key, anything else (arrays too) replaces.
// The null-then-object rule: a patch that puts an object where the tree holds null, a scalar or
// nothing starts that object afresh ({}), so no field of a deleted order survives its re-creation.

export function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

export function mergePatch(target, patch) {
  if (!isObject(patch)) return patch;
  if (!isObject(target)) target = {};
  for (const key of Object.keys(patch)) {
    const value = patch[key];
    if (value === null) {
      delete target[key];
    } else if (isObject(value)) {
      target[key] = mergePatch(isObject(target[key]) ? target[key] : {}, value);
    } else {
      target[key] = value;
    }
  }
  return target;
}

// One rtn_data: its data array is one transaction, applied in order.
export function applyData(tree, data) {
  let result = isObject(tree) ? tree : {};
  for (const patch of data || []) result = mergePatch(result, patch);
  return result;
}

// The notify entries a patch list adds (in order), for toasts: DIFF notify keys are unique.
export function notifiesOf(data) {
  const found = [];
  for (const patch of data || []) {
    if (isObject(patch) && isObject(patch.notify)) {
      for (const [key, value] of Object.entries(patch.notify)) {
        if (isObject(value)) found.push({ key, ...value });
      }
    }
  }
  return found;
}
