//! The keeper: the user's key manager. It decides, request by request, who may read which slice of time.
